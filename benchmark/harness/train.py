"""Training with the paper's protocol, resumable from the run's own checkpoint.

Adam (betas from the config; PyTorch's fused implementation, ~10% faster per step for a tiny
model), L1 (or L2) loss on random crops, an optional linear warm-up, then the learning rate
annealed by a cosine from ``lr`` to ``lr_min``; every ``val_every`` iterations the PSNR on the
first ``val_images`` validation slices (per task) decides which weights are kept (``best.pt``).
Sample order and crops are functions of (seed, iteration) only, and the checkpoint holds the
model, the optimizer, the RNG state and the log, so a resumed run computes what an uninterrupted
one would have: on a CPU the final weights are identical.

Every step is watched (``benchmark.results.health``): a non-finite loss or gradient norm ends the run
(``TrainingDiverged``, naming the iteration); the global gradient norm is logged, and clipped to
``train.grad_clip`` when that is set; the summary records the loss spikes, the validation inputs'
PSNR and whether the run learned (best validation PSNR at least ``train.min_gain`` dB above it; a
multi-task run on each task as well).
Every step and validation also goes to TensorBoard event files beside the run's folder
(``benchmark.harness.events``); nothing is read back from them.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.ops import precision

from benchmark.results import health, metrics, store
from benchmark.results.store import RunFolder
from benchmark.harness.events import TrainingEvents
from benchmark.harness.inference import TaskData, physical, restore, restore_physical


LOG_COLUMNS = ["iteration", "loss", "grad_norm", "lr", "val_psnr", "seconds"]   # train_log.csv


def learning_rate(iteration: int, config: dict) -> float:
    """The rate of (0-based) ``iteration``: a linear ramp to ``lr`` over the first ``warmup``
    iterations, then a cosine from ``lr`` to ``lr_min`` over the rest."""
    train = config["train"]
    warmup = min(train["warmup"], train["iters"])
    if iteration < warmup:
        return train["lr"] * (iteration + 1) / warmup
    progress = (iteration - warmup) / max(train["iters"] - warmup, 1)
    return train["lr_min"] + 0.5 * (train["lr"] - train["lr_min"]) * (1 + math.cos(math.pi * progress))


def _validation_slices(data: TaskData, limit: int):
    """(task id, modality, sample) of the first ``limit`` slices of each task: what validation scores."""
    start = 0
    for task_id, (part, size) in enumerate(zip(data.parts, data.sizes)):
        for index in range(min(limit, size)):
            yield task_id, part.modality, data.item(start + index)[1]
        start += size


def validation_input_psnrs(data: TaskData, limit: int) -> tuple[float, dict[str, float]]:
    """Mean PSNR of the degraded inputs themselves over the slices ``validate`` scores (the level a
    model that returns its input would reach): over all of them, and per task."""
    scored = [(data.tasks[task_id], metrics.evaluate(physical(sample["lq"][0], modality), physical(sample["hq"][0], modality),
                                                     modality)["psnr"]) for task_id, modality, sample in _validation_slices(data, limit)]
    by_task = {task: float(np.mean([p for t, p in scored if t == task])) for task in dict.fromkeys(t for t, _ in scored)}
    return float(np.mean([p for _, p in scored])), by_task


@torch.no_grad()
def validate(model: torch.nn.Module, data: TaskData, limit: int, device: torch.device) -> dict:
    """Mean PSNR (dB) and SSIM (physical units, the test protocol) over the first ``limit`` slices
    per task, the mean PSNR of each task's slices (``by_task``), and the first slice of each task as
    (task, modality, (input, output, truth))."""
    was_training = model.training
    model.eval()
    psnr, ssim, tasks, examples = [], [], [], []
    for task_id, modality, sample in _validation_slices(data, limit):
        out, gt, lq = restore_physical(model, sample, task_id, modality, device)
        scores = metrics.evaluate(out, gt, modality)
        psnr.append(scores["psnr"])
        ssim.append(scores["ssim"])
        tasks.append(data.tasks[task_id])
        if not any(task == data.tasks[task_id] for task, _, _ in examples):
            examples.append((data.tasks[task_id], modality, (lq, out, gt)))
    model.train(was_training)
    by_task = {task: float(np.mean([p for t, p in zip(tasks, psnr) if t == task])) for task in dict.fromkeys(tasks)}
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)), "by_task": by_task, "examples": examples}


def _read_checkpoint(folder: Path, device: torch.device) -> dict | None:
    """The resumable state in ``folder/checkpoint.pt``, or None. Loaded with ``weights_only=True``
    (tensors, numbers, strings: nothing in the file can run code); a file that cannot be read so
    (truncated, corrupt, or holding anything else), or whose best weights (``best.pt``) are gone,
    is reported and removed, and the run starts over."""
    path = RunFolder(folder).checkpoint
    if not path.is_file():
        return None
    try:
        state = store.read_weights(path, device)
        if not {"model", "optimizer", "rng", "iteration"} <= set(state):
            raise store.StoreError(f"{path}: not a training checkpoint of this harness (keys {sorted(state)[:6]})")
        if state.get("best_iteration"):
            store.read_weights(RunFolder(folder).best, device)
        return state
    except store.StoreError as err:
        detail = str(err).removeprefix(f"{path}: ")
        print(f"{path}: unreadable checkpoint ({detail}); training starts over", file=sys.stderr, flush=True)
        path.unlink(missing_ok=True)
        return None


def train(model: torch.nn.Module, config: dict, folder: Path, device: torch.device, progress: bool = True,
          until: int | None = None) -> dict:
    """Train ``model`` in place (ending with the best validation weights loaded); returns the
    training summary. Resumes from ``folder/checkpoint.pt`` when it exists. ``until``: stop after
    that many iterations (a validation point: a rung of successive halving, ``harness.tuning``)
    with the checkpoint saved and the schedule still the one over ``train.iters``; the summary then
    says ``partial`` and holds the best validation PSNR so far."""
    settings = config["train"]
    folder = Path(folder)
    stop = settings["iters"] if until is None else min(until, settings["iters"])
    if stop < settings["iters"] and stop % settings["val_every"]:
        raise ValueError(f"training can stop early only at a validation point (a multiple of train.val_every = "
                         f"{settings['val_every']}); got until={until}")
    train_data = TaskData(config, "train", settings["crop"])
    val_data = TaskData(config, "val", None)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["lr"], betas=tuple(settings["betas"]), fused=True)
    start, best, best_iter, log, elapsed = 0, -math.inf, 0, [], 0.0
    best_by_task: dict[str, float] = {}                # each task's validation PSNR at the kept iteration
    checkpoint_path = RunFolder(folder).checkpoint
    state = _read_checkpoint(folder, device)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start, best, best_iter, log, elapsed = (state["iteration"], state["best_psnr"], state["best_iteration"],
                                                state["log"], state["seconds"])
        best_by_task = state.get("best_by_task", {})
    loss_fn = F.l1_loss if settings["loss"] == "l1" else F.mse_loss
    parameters = [p for p in model.parameters() if p.requires_grad]
    max_norm = settings["grad_clip"] if settings["grad_clip"] is not None else math.inf   # inf: measured, never scaled
    autocast = precision.training_autocast(settings["precision"], device)
    events = TrainingEvents(folder, config["seed"], start)             # TensorBoard, beside the store folder
    model.train()
    clock = time.perf_counter()
    bar = tqdm(range(start, stop), initial=start, total=settings["iters"], disable=not progress,
               desc=f"train {folder.name}", unit="it", leave=False)
    for iteration in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(iteration, config)
        lq, hq, task_ids, regions = (t if t is None else t.to(device) for t in train_data.batch(iteration, settings["batch"]))
        with autocast:                                  # train.precision: bf16 (kernel ops stay fp32)
            loss = loss_fn(restore(model, lq, task_ids, regions), hq)
            extra = model.auxiliary_loss(lq)
            if extra is not None:
                loss = loss + settings["aux_weight"] * extra
        loss_value = loss.float().item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm).item()      # the norm before clipping
        health.check_finite(iteration + 1, optimizer.param_groups[0]["lr"], loss_value, grad_norm)
        optimizer.step()
        done = iteration + 1
        entry = {"iteration": done, "loss": round(loss_value, 6), "grad_norm": round(grad_norm, 6),
                 "lr": optimizer.param_groups[0]["lr"], "val_psnr": "", "seconds": None}
        events.step(done, loss_value, grad_norm, entry["lr"])
        if done % settings["val_every"] == 0 or done == settings["iters"]:
            scored = validate(model, val_data, settings["val_images"], device)
            psnr = scored["psnr"]
            entry["val_psnr"] = round(psnr, 4)
            events.validation(done, psnr, scored["ssim"], scored["examples"])
            if psnr > best:
                best, best_iter, best_by_task = psnr, done, scored["by_task"]
                store.save_torch(RunFolder(folder).best, model.state_dict())
            bar.set_postfix(loss=f"{loss_value:.4f}", val_psnr=f"{psnr:.2f}")
        entry["seconds"] = round(elapsed + time.perf_counter() - clock, 3)
        log.append(entry)
        if done % settings["checkpoint_every"] == 0 or done == settings["iters"] or entry["val_psnr"] != "":
            store.save_torch(checkpoint_path, {
                "iteration": done, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "rng": torch.get_rng_state(), "best_psnr": best, "best_iteration": best_iter, "log": log,
                "best_by_task": best_by_task,
                "seconds": entry["seconds"]})
            store.write_csv(RunFolder(folder).train_log, log, LOG_COLUMNS)
    bar.close()
    events.close()
    seconds = log[-1]["seconds"] if log else 0.0
    if stop < settings["iters"]:
        return {"partial": True, "iterations": stop, "best_val_psnr": best, "best_iteration": best_iter,
                "seconds": seconds}
    model.load_state_dict(store.read_weights(RunFolder(folder).best, device))
    val_input, input_by_task = validation_input_psnrs(val_data, settings["val_images"])
    validations = [(e["iteration"], e["val_psnr"]) for e in log if e["val_psnr"] != ""]
    verdict = health.run_verdict(best, val_input, settings["min_gain"], best_by_task, input_by_task,
                                 health.late_rise(validations, settings["iters"]))
    return {"iterations": settings["iters"], "best_val_psnr": best, "best_iteration": best_iter,
            "val_input_psnr": val_input, "health": verdict,
            "loss_spikes": health.loss_spikes([e["loss"] for e in log]), "grad_clip": settings["grad_clip"],
            "final_loss": log[-1]["loss"] if log else None, "seconds": seconds,
            "resumed_from": start, "precision": settings["precision"]}
