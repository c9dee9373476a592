"""Training health: the rules that tell a run that learned from one that diverged, spiked or did
not learn. Compute only (no I/O): ``benchmark.harness.train`` applies them while training, the pipeline
records the verdict, and status, the console and the renderer show it.

- **Diverged**: a non-finite loss or gradient norm ends the run as failed, naming the iteration
  (``TrainingDiverged``: "diverged at iteration 249: loss nan").
- **Loss spike**: an iteration whose loss exceeds ``SPIKE_FACTOR`` times the median of the
  ``SPIKE_WINDOW`` losses before it (checked once that many exist). Batch-1 losses on random crops
  vary from crop to crop, but in the 105 runs of the smoke calibration the largest was 4.1x that
  median (docs/calibration.md), while a run that blew up at the top of its warm-up jumped to
  10-50x it: 10x separates the two. Spikes are logged in ``train.json`` with their iteration; they do not
  stop a run.
- **Did not learn**: a finished run whose best validation PSNR beats the validation inputs' PSNR
  by less than ``train.min_gain`` dB (a model that ends near "output = input", or worse). A run
  trained on several tasks (all-in-one) is judged on each task too, with that task's validation
  slices at the iteration whose weights are kept: it did not learn when any task did not, and the
  tables mark it on that task only, with that task's gain.
- **Still rising**: a finished run whose last quarter of training added more than ``PLATEAU_DB``
  to its best validation PSNR (``late_rise``) ended far from its plateau: a verdict taken there
  can flip on another machine (another reduction order), so the verdict says so.
"""
from __future__ import annotations

import math

import numpy as np

SPIKE_FACTOR = 10.0
SPIKE_WINDOW = 50
DID_NOT_LEARN = "did not learn"
LATE_SHARE = 0.25           # the last quarter of training ...
PLATEAU_DB = 0.2            # ... may add this much to the best validation PSNR of a run that ended near its plateau


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite."""


def check_finite(iteration: int, lr: float, loss: float, grad_norm: float | None = None) -> None:
    """Raise ``TrainingDiverged`` naming the (1-based) iteration when the loss or the gradient norm
    (once computed) is not finite."""
    for what, value in (("loss", loss), ("gradient norm", grad_norm)):
        if value is not None and not math.isfinite(value):
            raise TrainingDiverged(f"diverged at iteration {iteration}: {what} {value} (lr {lr:.3g}); "
                                   "lower train.lr or set train.grad_clip")


def loss_spikes(losses, factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW) -> list[dict]:
    """The spikes of a loss curve (``losses[i]`` is iteration ``i + 1``): each loss above ``factor``
    times the median of the ``window`` losses before it, as ``{"iteration", "loss", "median"}``."""
    losses = np.asarray(losses, dtype=np.float64)
    if len(losses) <= window:
        return []
    windows = np.lib.stride_tricks.sliding_window_view(losses[:-1], window)     # windows[j] precedes j + window
    medians = np.median(windows, axis=1)
    later = losses[window:]
    hits = np.nonzero(later > factor * medians)[0]
    return [{"iteration": int(j + window + 1), "loss": round(float(later[j]), 6), "median": round(float(medians[j]), 6)}
            for j in hits]


def late_rise(validations: list[tuple[int, float]], iters: int) -> float | None:
    """What the last ``LATE_SHARE`` of training added to the best validation PSNR (dB): the best over
    the run minus the best up to ``(1 - LATE_SHARE) * iters``; None without a validation by then."""
    early = [psnr for iteration, psnr in validations if iteration <= (1 - LATE_SHARE) * iters]
    if not early:
        return None
    return round(float(max(psnr for _, psnr in validations) - max(early)), 4)


def verdict(best_val_psnr: float, val_input_psnr: float, min_gain: float) -> dict:
    """Whether a finished run learned: its best validation PSNR minus the inputs', against ``min_gain`` dB."""
    gain = best_val_psnr - val_input_psnr
    learned = bool(gain >= min_gain)
    return {"verdict": "learned" if learned else DID_NOT_LEARN, "learned": learned,
            "val_gain_db": round(float(gain), 4), "min_gain_db": min_gain}


def run_verdict(best_val_psnr: float, val_input_psnr: float, min_gain: float,
                best_by_task: dict[str, float], input_by_task: dict[str, float], rise_db: float | None = None) -> dict:
    """``verdict`` over all validation slices, with the last quarter's rise (``late_rise``) and
    whether it stays within ``PLATEAU_DB``; with more than one task, also each task's under
    ``tasks``, and the run learned only if every task did."""
    overall = verdict(best_val_psnr, val_input_psnr, min_gain)
    if rise_db is not None:
        overall.update(late_rise_db=rise_db, plateau=bool(rise_db <= PLATEAU_DB))
    if len(input_by_task) < 2 or set(best_by_task) != set(input_by_task):
        return overall
    tasks = {task: verdict(best_by_task[task], input_by_task[task], min_gain) for task in input_by_task}
    failing = [task for task, v in tasks.items() if not v["learned"]]
    if failing:
        overall.update(verdict=DID_NOT_LEARN, learned=False)
    return {**overall, "tasks": tasks}


def learned(status: dict, task: str | None = None) -> bool:
    """False only for a finished run whose recorded verdict is "did not learn" (an older run without
    a verdict counts as learned: nothing says otherwise); with ``task``, the verdict on that task
    where the run recorded one per task."""
    health = status.get("health") or {}
    own = (health.get("tasks") or {}).get(task) if task else None
    return (own or health).get("learned", True)


def describe(status: dict) -> str:
    """A run status's health in words: "did not learn (+0.0 dB over the validation inputs, under
    +2 dB)", "learned (+3.1 dB over ...)", with its loss spikes; "" without a verdict."""
    health = status.get("health")
    if not health:
        return ""
    gain = f"{health['val_gain_db']:+.1f} dB over the validation inputs"
    failing = {t: v for t, v in (health.get("tasks") or {}).items() if not v["learned"]}
    if failing:
        gain += "; on " + ", ".join(f"{t}: {v['val_gain_db']:+.1f} dB" for t, v in failing.items())
    text = f"{DID_NOT_LEARN} ({gain}, under {health['min_gain_db']:+g} dB)" if not health["learned"] else f"learned ({gain})"
    if health.get("plateau") is False:
        text += f"; still rising ({health['late_rise_db']:+.2f} dB in the last quarter)"
    spikes = status.get("loss_spikes") or 0
    return text + (f"; {spikes} loss spike{'s' if spikes > 1 else ''} (train.json)" if spikes else "")
