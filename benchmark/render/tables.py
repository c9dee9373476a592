"""A grid store -> the paper's table layout in markdown, with the paper's numbers beside ours.

Rows follow the grid's order, one per label (means over the seeds that finished); the paper's rows
that the grid did not run follow as "not run". Best of ours in bold, second underlined (PSNR and
SSIM: higher is better; RMSE: lower). Deterministic: it reads only the store.
"""
from __future__ import annotations

import datetime
import math
from fractions import Fraction

import numpy as np
import pandas as pd

from benchmark.base import markdown, provenance
from benchmark.results import stats
from benchmark.base.vocabulary import TASK_TITLES, TASKS
from benchmark.render.figures import high_contribution_area
from benchmark.results.health import PLATEAU_DB
from benchmark.results.paper import paper_numbers

HIGHER_IS_BETTER = stats.HIGHER_IS_BETTER                           # the metrics, in column order


def _fmt(value) -> str:
    """Params and MACs: 4 decimals, as the paper prints them; "-" when unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}"


def _rmse_digits(values) -> int:
    """RMSE in HU / scanner units (tens) gets 2 decimals, in SUV (below 1) 4."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return 4 if finite and max(finite) < 1 else 2


def _marks(values: list[float | None], higher_better: bool, digits: int) -> list[str]:
    """'best' / 'second' / '' per value (ties at the shown precision share a mark)."""
    shown = sorted({round(v, digits) for v in values if v is not None and not math.isnan(v)},
                   reverse=higher_better)
    rank = {v: ("best" if i == 0 else "second" if i == 1 else "") for i, v in enumerate(shown)}
    return [rank.get(round(v, digits), "") if v is not None and not math.isnan(v) else "" for v in values]


def _decorate(text: str, mark: str) -> str:
    return f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark == "second" else text


def _summaries(index: pd.DataFrame, task: str) -> list[dict]:
    """One entry per label in grid order: means over its finished seeds, or its state."""
    out = []
    for label, group in index.sort_values(["index"]).groupby("label", sort=False):
        finished = group[group["state"] == "done"]
        done = finished[finished["eval_task"] == task]
        not_learned = done[~done["learned"].astype(bool)] if "learned" in done else done.iloc[:0]
        rising = done[done["still_rising"].astype(bool)] if "still_rising" in done else done.iloc[:0]
        entry = {"label": label, "runs": int(group["id"].nunique()), "done": int(done["id"].nunique()),
                 "seeds": sorted(int(x) for x in done["seed"].dropna().unique()),
                 "not_learned": [(seed, gain) for seed, gain in zip(not_learned["seed"], not_learned["val_gain_db"])],
                 "rising": [(seed, rise) for seed, rise in zip(rising["seed"], rising["late_rise_db"])],
                 "states": sorted(set(group["state"])), "reasons": sorted({r for r in group["reason"] if r}),
                 "other_tasks": sorted(set(finished["eval_task"].dropna()) - {task})}
        first = group.iloc[0]
        entry.update(params_m=first["deploy_params_m"], paper_gmacs=first["paper_gmacs"],
                     profile_size=_number(first.get("profile_size")),
                     floored=next((f for f in group.get("floored", []) if isinstance(f, dict)), None))
        for key in HIGHER_IS_BETTER:
            entry[key] = float(done[key].mean()) if len(done) else None
            entry[f"input_{key}"] = float(done[f"input_{key}"].mean()) if len(done) else None
        out.append(entry)
    return out


def _number(value) -> int | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)


def seeds_text(seeds: list[int]) -> str:
    """'seed 0', 'seeds 0-4', 'seeds 0-1, 3': which training runs a number averages."""
    if not seeds:
        return ""
    runs, start = [], seeds[0]
    for previous, current in zip(seeds, seeds[1:] + [None]):
        if current is None or current != previous + 1:          # a run of consecutive seeds ends here
            runs.append(f"{start}" if start == previous else f"{start}-{previous}")
            start = current
    return f"seed{'s' * (len(seeds) > 1)} {', '.join(runs)}"


def _state_text(entry: dict) -> str:
    if "broken" in entry["states"]:
        return "broken"
    if "failed" in entry["states"]:
        return "failed"
    if entry["other_tasks"] and entry["states"] == ["done"]:        # a grid that mixes tasks
        return f"scored on {', '.join(entry['other_tasks'])}"
    return "not finished"


NOT_LEARNED_MARK = "✗"
FLOORED_MARK = "†"


def floored_note(entries: list[dict]) -> str:
    """The footnote for rows whose tiny preset was raised to the parameter floor or widened ("" when
    none is)."""
    floored = [e for e in entries if e.get("floored") and "floor" in e["floored"]]
    widened = [e for e in entries if e.get("floored") and "widened" in e["floored"]]
    notes = []
    if floored:
        rule = floored[0]["floored"]
        notes.append(f"{', '.join(e['label'] for e in floored)}: a tiny preset keeps the paper's size / "
                     f"{rule['divisor']} unless that is under {rule['floor']:,} trainable parameters; then the full "
                     f"model's widths are scaled uniformly to the smallest size of at least {rule['floor']:,}, its "
                     "depth and layers kept (its size ratio to the other rows is not the paper's).")
    for e in widened:
        notes.append(f"{e['label']}: its tiny preset is wider than the paper's size / {e['floored']['divisor']}: "
                     f"{e['floored']['widened']} (its size ratio to the other rows is not the paper's).")
    return " ".join(f"{FLOORED_MARK} {n}" for n in notes)


def did_not_learn(entry: dict, min_gain: float) -> bool:
    """A finished row with a run whose training did not learn, or whose test gain over its inputs is
    under ``min_gain`` dB."""
    return bool(entry["done"]) and (bool(entry["not_learned"]) or entry["psnr"] - entry["input_psnr"] < min_gain)


def still_rising_note(entries: list[dict]) -> str:
    """The footnote naming the runs that were still rising at the end of training ("" when none)."""
    rows = [f"{e['label']} ({', '.join(f'seed {seed}: {rise:+.2f} dB' for seed, rise in e['rising'])})"
            for e in entries if e.get("rising")]
    if not rows:
        return ""
    pooled = any(e.get("other_tasks") for e in entries)      # one run trained and validated on several tasks
    measured = ("validation PSNR over all the tasks' slices, the same figure in every task's section"
                if pooled else "validation PSNR")
    return (f"Still rising at the end of training (the last quarter added more than {PLATEAU_DB:+g} dB to the best "
            f"{measured}): {'; '.join(rows)}. Their numbers are early-training numbers, and a verdict taken "
            "there can change with the machine.")


def not_learned_note(entries: list[dict], min_gain: float) -> str:
    """The footnote for the rows marked ✗ ("" when none is)."""
    rows = []
    for e in entries:
        if not did_not_learn(e, min_gain):
            continue
        seeds = ", ".join(f"seed {seed}: {gain:+.1f} dB" for seed, gain in e["not_learned"])
        rows.append(f"{e['label']} (test gain {e['psnr'] - e['input_psnr']:+.2f} dB" + (f"; validation, {seeds}" if seeds else "") + ")")
    if not rows:
        return ""
    return (f"{NOT_LEARNED_MARK} did not learn at this scale: {'; '.join(rows)}. A row is marked when one of its runs "
            f"ended less than {min_gain:+g} dB above its validation inputs (train.min_gain; its best validation PSNR), "
            "or its mean test gain is under that: its numbers say that training failed, not how good the method is. "
            "The training curves figure shows why.")


SAME_NETWORK_MARK = "≡"


def same_network_note(same: dict[str, list[str]]) -> str:
    """The footnote for rows that build the same network as other rows at this scale ("" when none)."""
    if not same:
        return ""
    rows = "; ".join(f"{label} builds the same network as {', '.join(others)}" for label, others in same.items())
    return (f"{SAME_NETWORK_MARK} {rows}, at this scale (the same modules, module settings and parameter shapes, "
            "compared by the harness on the built networks; other tables' rows may differ in data and training). "
            "A difference between such rows is one between training runs of one network, not between the designs "
            "their labels name.")


def row_marks(index: pd.DataFrame, tasks: list[str], min_gain: float,
              same: dict[str, list[str]] | None = None) -> dict[str, str]:
    """Each row's marks as its figures show them after its label (' †', ' ≡', ' ✗': floored, the
    same network as another row, did not learn on a task), the same marks as its table's."""
    marks: dict[str, str] = {}
    for task in tasks:
        for e in _summaries(index, task):
            text = marks.get(e["label"], "")
            for mark, applies in ((FLOORED_MARK, bool(e.get("floored"))), (SAME_NETWORK_MARK, e["label"] in (same or {})),
                                  (NOT_LEARNED_MARK, did_not_learn(e, min_gain))):
                if applies and mark not in text:
                    text += f" {mark}"
            marks[e["label"]] = text
    return {label: text for label, text in marks.items() if text}


def task_table(entries: list[dict], task: str, table: int | None, paper: list[dict], min_gain: float = 0.0,
               paper_comparable: bool = False, same: dict[str, list[str]] | None = None) -> tuple[str, list[str], str]:
    """The markdown table of one evaluated task from its rows' ``_summaries``, the notes on its runs
    without a result, and its footnotes (rows that did not learn, floored presets, rows that build
    another row's network: ``same``, label -> the rows it equals; "" when none). ``paper_comparable``:
    our data and scale are the paper's, so ``ours − paper`` is shown (never at smoke scale or on
    phantoms: a phantom PSNR minus a real-data one means nothing)."""
    same = same or {}
    reported = {r["method"]: r for r in paper if r["table"] == table and r["task"] == task}
    digits = {"psnr": 2, "ssim": 4, "rmse": _rmse_digits([e["rmse"] for e in entries]
                                                        + [r["rmse"] for r in reported.values()])}
    marks = {key: _marks([e[key] for e in entries], higher, digits[key]) for key, higher in HIGHER_IS_BETTER.items()}
    sizes = [e["profile_size"] for e in entries if e.get("profile_size")]
    common = max(set(sizes), key=sizes.count) if sizes else None
    rows = []
    notes = []
    for i, entry in enumerate(entries):
        theirs = reported.get(entry["label"], {})
        if entry["done"]:
            ours = [_decorate(f"{entry[k]:.{digits[k]}f}", marks[k][i]) for k in HIGHER_IS_BETTER]
            seeds = f" ({seeds_text(entry['seeds'])})" if entry.get("seeds") else ""
            if did_not_learn(entry, min_gain):
                seeds = f" {NOT_LEARNED_MARK}{seeds}"
        else:
            ours, seeds = [_state_text(entry), "-", "-"], ""
            notes += [f"- {entry['label']}: {reason}" for reason in entry["reasons"]]
        paper_cells = [f"{theirs[k]:.{digits[k]}f}" if theirs.get(k) is not None else "-" for k in HIGHER_IS_BETTER]
        delta = (f"{entry['psnr'] - theirs['psnr']:+.2f}" if entry["done"] and theirs.get("psnr") is not None else "-")
        marks_after = (f" {FLOORED_MARK}" if entry.get("floored") else "") + \
                      (f" {SAME_NETWORK_MARK}" if entry["label"] in same else "")
        macs = _fmt(entry["paper_gmacs"])
        if entry.get("profile_size") and common and entry["profile_size"] != common and macs != "-":
            macs += f" (at {entry['profile_size']}x{entry['profile_size']})"
        rows.append([f"{entry['label']}{marks_after}{seeds}", _fmt(entry["params_m"]), macs, *ours, *paper_cells]
                    + ([delta] if paper_comparable else []))
    for method, theirs in reported.items():
        if method not in {e["label"] for e in entries}:
            paper_cells = [f"{theirs[k]:.{digits[k]}f}" for k in HIGHER_IS_BETTER]
            rows.append([method, _fmt(theirs["params_m"]), _fmt(theirs["flops_g"]), "not run", "-", "-", *paper_cells]
                        + (["-"] if paper_comparable else []))
    inputs = next((e for e in entries if e["done"]), None)
    if inputs is not None:
        rows.append(["*input (degraded)*", "-", "-", *(f"{inputs[f'input_{k}']:.{digits[k]}f}" for k in HIGHER_IS_BETTER),
                     "-", "-", "-"] + (["-"] if paper_comparable else []))
    header = ["Method", "Params (M)", "MACs (G)", "PSNR", "SSIM", "RMSE", "paper PSNR", "paper SSIM", "paper RMSE"] \
        + (["ours − paper (PSNR)"] if paper_comparable else [])
    footnotes = "\n\n".join(n for n in (floored_note(entries), same_network_note(same),
                                         not_learned_note(entries, min_gain), still_rising_note(entries)) if n)
    return markdown.table(header, rows), notes, footnotes


FEW_SEEDS = 5          # fewer seeds per row: the bootstrap's spread between training runs is understated


def _interval(c: stats.Comparison, digits: int) -> str:
    text = f"{c.difference:+.{digits}f} [{c.low:+.{digits}f}, {c.high:+.{digits}f}]"
    return text if c.resolved else f"{text} ≈"


def _p(value: float | None) -> str:
    return "-" if value is None else "<0.001" if value < 0.001 else f"{value:.3f}"


def subject_nouns(source: str, task: str) -> tuple[str, str]:
    """What one subject of a test set is called: (singular, plural)."""
    if str(source).startswith("phantom-"):
        return "phantom", "phantoms"
    return ("patient", "patients") if task == "ct_denoise" else ("subject", "subjects")


def unit_text(scores: pd.DataFrame, nouns: tuple[str, str]) -> str:
    """The unit the statistics resample, as a sentence: how many test images of how many subjects,
    and what an interval then covers."""
    one, many = nouns
    images = scores["index"].nunique()
    subjects = scores["subject"].nunique() if "subject" in scores else images
    if "subject_recorded" in scores and not scores["subject_recorded"].all():
        return (f"Unit: {images} test images whose subjects these runs did not record (tested before subjects "
                "were recorded): each image is counted as its own subject, so the intervals are too narrow if "
                "images share a subject; rerun the grid to record them.")
    if subjects == images:
        return f"Unit: {images} test images of {images} {many} (one image each); the {many} are resampled."
    if subjects == 1:
        return (f"Unit: {images} slices of 1 {one}: its slices are resampled, so the intervals cover these slices "
                f"of this {one}, not other {many}.")
    return (f"Unit: {images} slices of {subjects} {many}: the {many} are resampled, then the slices within each "
            f"(slices of one {one} are not independent).")


def compare_rows(scores: pd.DataFrame, tasks: list[str], labels: list[str], reference: str) -> dict:
    """Per task, its rows against the reference row: {"psnr": [...], "ssim": [...]} of
    ``stats.Comparison`` (``p_holm`` adjusted over the table's comparisons of that metric, all tasks
    together), or a string saying why there are none."""
    out = {}
    for task in tasks:
        mine = scores[scores["task"] == task]
        done = [label for label in labels if label in set(mine["label"])]
        if reference not in done:
            out[task] = f"No statistics: the reference row {reference!r} has no finished run on this task."
            continue
        try:
            out[task] = {metric: stats.compare(mine, done, reference, metric) for metric in ("psnr", "ssim")}
        except ValueError as err:               # e.g. rows tested on different images: say so, render the rest
            out[task] = f"No statistics: {err}."
    for metric in ("psnr", "ssim"):             # Holm over the table's comparisons of this metric
        family = [c for result in out.values() if isinstance(result, dict) for c in result[metric]]
        adjusted = dict(zip(map(id, family), stats.with_holm(family)))
        for result in out.values():
            if isinstance(result, dict):
                result[metric] = [adjusted[id(c)] for c in result[metric]]
    return out


def holm_family(comparisons: dict) -> int:
    """How many PSNR comparisons the table's Holm correction adjusts over."""
    return sum(c.p_value is not None for r in comparisons.values() if isinstance(r, dict) for c in r["psnr"])


def statistics_table(result: dict | str, scores: pd.DataFrame, reference: str, failed: set[str] = frozenset(),
                     nouns: tuple[str, str] = ("subject", "subjects"),
                     family: int = 0) -> tuple[str, list[str], list[str], str]:
    """One task's rows against the reference row (``compare_rows``'s ``result`` for the task), the
    notes that say how to read it and what the scale resolves, the headline (a few lines: the best
    row, the reference, the rows whose interval excludes 0) and the warning to print above the table
    ("" unless the reference row is in ``failed``, the rows that did not learn, marked ✗: then no
    difference is a finding); ("", notes, headline, "") when there is no result."""
    if isinstance(result, str):
        return "", [result], [result], ""
    psnr, ssim = result["psnr"], result["ssim"]
    gains = scores.groupby("label").apply(lambda g: (g["psnr"] - g["input_psnr"]).mean(), include_groups=False)
    rows = []
    for p, s in zip(psnr, ssim):
        spread = f" ± {p.seed_sd:.2f}" if p.seed_sd is not None else ""
        if p.label == reference:
            cells = ["reference", "-", "-", "reference", "-", "-"]
        else:
            cells = [_interval(p, 2), _p(p.p_value), _p(p.p_holm), _interval(s, 4), _p(s.p_holm), _p(p.wilcoxon)]
        mark = f" {NOT_LEARNED_MARK}" if p.label in failed else ""
        rows.append([f"{p.label}{mark}", p.seeds, f"{p.mean:.2f}{spread}", f"{gains[p.label]:+.2f}{mark}", *cells,
                     f"{100 * p.first:.0f}%"])
    lines = [markdown.table(["Method", "seeds", "PSNR (± SD over seeds)", "gain over input",
                             f"ΔPSNR vs {reference} [95% CI]", "p", "p (Holm)", f"ΔSSIM vs {reference} [95% CI]",
                             "p (Holm)", "Wilcoxon p (secondary)", "P(first)"], rows)]
    others = [c for c in psnr if c.label != reference]
    seeds = min(c.seeds for c in psnr)
    notes = [unit_text(scores, nouns),
             f"Differences to the reference row {reference}, paired image by image (ours minus reference; means "
             "over seeds per image). 95% CI: hierarchical bootstrap "
             f"({stats.RESAMPLES:,} resamples of each row's seeds, then of the {nouns[1]}, then of the slices within "
             "them); ≈: the interval contains 0, so the difference is not resolved. p: from the same resamples "
             "(twice the smaller share of resampled differences at or beyond 0), so p < 0.05 exactly when the "
             f"interval excludes 0. p (Holm): adjusted over the table's {family} PSNR comparisons (SSIM: its own "
             "family of as many); a difference is a finding at the 5% level over the whole table when it is under "
             "0.05. Wilcoxon p: signed-rank test of the per-image differences, a secondary column that treats "
             "images as independent and ignores seeds, so it can be small where the interval contains 0. "
             "P(first): the share of bootstrap resamples in which the row has the best PSNR. Gain over input: "
             "PSNR minus the degraded input's."]
    if others:
        half = sorted((c.high - c.low) / 2 for c in others)[len(others) // 2]
        if seeds >= FEW_SEEDS:
            notes.append(f"What this scale resolves: the median 95% interval is ±{half:.2f} dB; PSNR differences "
                         "smaller than that are not shown to be real.")
        elif seeds >= 2:
            notes.append(f"What this scale resolves: the median 95% interval is ±{half:.2f} dB; PSNR differences "
                         f"smaller than that are not shown to be real. With {seeds} seeds per row the bootstrap sees "
                         f"only {seeds} training runs of each row and understates their spread: an interval near 0 "
                         f"may not hold with more seeds (run {FEW_SEEDS} or more to be confident; "
                         "docs/calibration.md compares 2 and 5 seeds).")
        else:
            notes.append(f"What this scale resolves: the median 95% interval over the images is ±{half:.2f} dB, but "
                         "with one seed per row the spread between training runs (seeds) is not in it and adds to "
                         "it, so smaller differences are certainly not shown to be real, and larger ones only for "
                         "these trained models; run more seeds (axes: seed: [0, 1, 2]) to include it.")
    warning = (f"**The reference row {reference} did not learn ({NOT_LEARNED_MARK}): every difference below is to a "
               "failed training run, not to the method, and none of them is a finding. See the training curves; "
               "rerun with more seeds or a calibrated scale.**") if reference in failed else ""
    return "\n".join(lines), notes, _headline(psnr, reference, gains, failed), warning


def _headline(psnr: list[stats.Comparison], reference: str, gains: pd.Series, failed: set[str]) -> list[str]:
    """The table in a few lines: the best row, the reference, the rows whose PSNR interval excludes 0
    (findings only when the reference learned) and how many of them hold after Holm, the rows that
    did not learn."""
    best = max(psnr, key=lambda c: c.mean)
    ref = next(c for c in psnr if c.label == reference)
    lines = [f"best PSNR: {best.label} {best.mean:.2f} dB (gain {gains[best.label]:+.2f} dB over the input; "
             f"first in {100 * best.first:.0f}% of resamples)",
             f"reference: {reference} {ref.mean:.2f} dB (gain {gains[reference]:+.2f} dB)"]
    resolved = [c for c in psnr if c.label != reference and c.resolved]
    listed = "; ".join(f"{c.label} {c.difference:+.2f} [{c.low:+.2f}, {c.high:+.2f}]" for c in resolved) or "none"
    if reference in failed:
        lines.append(f"the reference {reference} did not learn: no difference to it is a finding")
    else:
        held = sum(c.p_holm is not None and c.p_holm < 1 - stats.CONFIDENCE for c in resolved)
        lines.append(f"interval excludes 0 ({len(resolved)} of {len(psnr) - 1}; {held} after Holm): {listed}")
    if failed:
        lines.append(f"did not learn: {', '.join(label for label in gains.index if label in failed)}")
    return lines


def erf_table(stacks: dict[str, list[np.ndarray]], means: dict[str, np.ndarray], figure: str) -> str:
    """The ERF summary under a grid's tables: per label, the 90%-contribution area of its mean map
    (``means``, the figure's panel) and of each image's map in ``stacks`` (mean ± SD over images)."""
    rows = []
    for label, maps in stacks.items():
        each = 100 * np.array([high_contribution_area(m) for m in maps])
        spread = each.std(ddof=1) if len(each) > 1 else 0.0
        rows.append([label, len(maps), f"{100 * high_contribution_area(means[label]):.1f}%",
                     f"{each.mean():.1f}% ± {spread:.1f}%"])
    return (f"\nEffective receptive fields (`{figure}`: the mean over images of the ReLU'd gradient of the centre "
            "output pixel, shown divided by its maximum and raised to 0.25). Area: the smallest share of the pixels "
            "that holds 90% of the contribution (larger: more global), of the mean map and per image (mean ± SD "
            "over images).\n\n" + markdown.table(["Method", "images", "area of the mean map", "area per image"], rows)
            + "\n")


def smoke_note(paper: list[dict], table: int | None, reference: str) -> str:
    """The smoke-scale banner, with the spread of the paper's own differences in this table computed
    from its numbers (its rows against the reference row, PSNR, every task)."""
    rows = [r for r in paper if r["table"] == table and r["psnr"] is not None]
    gaps = []
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = {r["method"]: r["psnr"] for r in rows if r["task"] == task}
        if reference in mine:
            gaps += [abs(v - mine[reference]) for m, v in mine.items() if m != reference]
        else:                                   # no reference row in the paper: every pair
            values = list(mine.values())
            gaps += [abs(a - b) for i, a in enumerate(values) for b in values[i + 1:]]
    spread = (f" (in this table the paper's rows differ from {reference} by {min(gaps):.2f} to {max(gaps):.2f} dB "
              "PSNR)" if gaps else "")
    return ("Smoke scale is a pipeline check: it shows that every model trains (its gain over the input) and "
            f"differences larger than the intervals below; it cannot show differences the size of the paper's{spread}, "
            "and its numbers (phantom data, tiny presets, short training) do not reproduce the paper's real-data, "
            "paper-scale results, which are printed beside them only as the target of a paper-scale run.")


def _counted(values: list[str]) -> str:
    """'a' when all are a, else 'a (3), b (1)' in order of first appearance."""
    counts = {v: values.count(v) for v in dict.fromkeys(values)}
    return next(iter(counts)) if len(counts) == 1 else ", ".join(f"{v} ({n})" for v, n in counts.items())


def commit_text(env: dict) -> str:
    """A run's (or a measurement's) commit as a table says it: 7 hex digits, and whether its result
    code had uncommitted changes."""
    commit = env.get("git_commit")
    text = commit[:7] if commit else ("none (not a git checkout)" if "git_commit" in env else "unrecorded")
    return text + (" with uncommitted changes" if env.get("git_dirty") else "")


def provenance_notes(records: list[dict]) -> tuple[str, str]:
    """(the provenance line under the title, the footnote on stale runs (``provenance.is_stale``) or "")
    of the finished runs;
    ``records`` hold each run's ``label``, ``seed``, ``environment`` (environment.json),
    ``status`` (status.json) and ``model`` (the preset of its spec.json, or None)."""
    done = [r for r in records if r["status"].get("state") == "done"]
    if not done:
        return "", ""
    commits, machines, days = [], [], []
    for r in done:
        env = r["environment"] or {}
        commits.append(commit_text(env))
        threads = env.get("threads")
        machines.append(f"{env.get('cpu') or env.get('platform') or 'unrecorded machine'}"
                        + (f", {threads} thread{'s' * (threads != 1)}" if threads else "")
                        + (f", {env['gpu']}" if env.get("gpu") else ""))
        if r["status"].get("finished"):
            days.append(datetime.datetime.fromtimestamp(r["status"]["finished"], datetime.timezone.utc).strftime("%Y-%m-%d"))
    span = f"{min(days)} to {max(days)}" if days and min(days) != max(days) else (days[0] if days else "undated")
    line = (f"Provenance of the {len(done)} finished runs: commit {_counted(commits)}; machine {_counted(machines)}; "
            f"finished {span} (UTC).")
    stale = [r for r in done if provenance.is_stale(r["status"], r["environment"], r.get("model"))]
    current_code = provenance.code_hash()
    note = ""
    if stale:
        names = ", ".join(f"{r['label']} (seed {r['seed']})" for r in stale)
        codes = _counted([r["status"].get("code_hash") or "unrecorded" for r in stale])
        note = (f"{len(stale)} of these runs were made with other code ({codes}) than the current ({current_code}), "
                f"kept with `--keep-stale`: {names}. Their numbers may not be what the current code gives; rerun "
                f"the grid's command without `--keep-stale` to redo them.")
    return line, note


def render_markdown(metadata: dict, index: pd.DataFrame, runs: list[dict], scores: pd.DataFrame | None = None,
                    headline: list[str] | None = None, provenance: tuple[str, str] = ("", ""),
                    same: dict[str, list[str]] | None = None, claims_link: str = "") -> str:
    """The whole ``tables/<grid>.md``; ``runs`` are the specs (configs) of the grid's runs in order;
    ``scores`` the per-image scores (``store.load_image_scores``) behind the statistics;
    ``provenance`` the line under the title and the stale-run footnote (``provenance_notes``);
    ``same``: rows that build the same network as other rows (label -> those rows); ``claims_link``:
    a line pointing to this table's claims in the ledger. The table's headline (per task) is
    appended to ``headline`` when a list is given."""
    paper = paper_numbers()
    table = metadata.get("table")
    heading = f"Table {table}: " if table else ""
    lines = [f"# {heading}{metadata.get('title') or metadata['name']}", ""]
    if provenance[0]:
        lines += [provenance[0], ""]
    lines += [f"Generated by `python -m benchmark.run --grid {metadata['file']} --scale {metadata['scale']}` "
              f"(re-rendered from its store by `python -m benchmark.render`).", ""]
    if provenance[1]:
        lines += [f"**{provenance[1]}**", ""]
    config = runs[0]["config"] if runs else {}
    labels = list(dict.fromkeys(index.sort_values("index")["label"])) if len(index) else []
    reference = metadata.get("reference") or (labels[0] if labels else "")
    comparable = bool(config) and metadata["scale"] == "paper" and not any(
        str(source).startswith("phantom-") for source in config["data"]["sources"].values())
    if config:
        sizes = [r["config"]["profile"]["size"] for r in runs]
        size = max(set(sizes), key=sizes.count)
        train = config["train"]
        models = ", ".join(dict.fromkeys(r["model"] for r in runs))
        warmup = f" ({train['warmup']} of warm-up)" if train.get("warmup") else ""
        clip = f", gradient norm clipped at {train['grad_clip']:g}" if train.get("grad_clip") else ""
        betas = ", ".join(f"{b:g}" for b in train["betas"])
        lr = "a learning rate tuned per row (see Tuning)" if "train.lr" in metadata.get("tune", {}) \
            else f"lr {train['lr']:g}"
        lines += [f"Scale `{metadata['scale']}`: {models}; {train['iters']} iterations{warmup} of batch {train['batch']} "
                  f"on {train['crop']}x{train['crop']} crops at {lr} (Adam {betas}{clip}); data " +
                  ", ".join(_source_text(config, t) for t in TASKS[config["task"]]) + ". "
                  f"Params in millions (trainable, deploy form: as the paper counts); MACs in G at "
                  f"1x1x{size}x{size} (a row profiled at another size says so), "
                  "module level as the paper counts them (`benchmark.profile`, convention `paper`). "
                  "PSNR in dB, SSIM and RMSE in physical units with the paper's protocol (`benchmark.results.metrics`). "
                  "Each row is the mean over the seeds it names. The paper's columns are Yang et al.'s results on "
                  "real data at paper scale" + (" (ours − paper: the PSNR difference)" if comparable else
                                                 ", not comparable with ours at this scale and data") +
                  ". Best of ours in bold, second underlined.", ""]
        if metadata["scale"] == "smoke":
            lines += [f"**{smoke_note(paper, table, reference)}**", ""]
    if claims_link:
        lines += [claims_link, ""]
    if metadata.get("note"):
        lines += [f"Note: {metadata['note']}", ""]
    tasks = list(TASKS[config["task"]]) if config else list(dict.fromkeys(index["eval_task"].dropna()))
    min_gain = config["train"].get("min_gain", 0.0) if config else 0.0
    has_scores = scores is not None and len(scores) > 0
    comparisons = compare_rows(scores, tasks, labels, reference) if has_scores else {}
    for task in tasks:
        if len(tasks) > 1:
            lines += [f"## {TASK_TITLES.get(task, task)}", ""]
        entries = _summaries(index, task)
        body, failures, health_note = task_table(entries, task, table, paper, min_gain, comparable, same)
        lines += [body, ""]
        if failures:
            lines += ["Runs without a result:", *failures, ""]
        if health_note:
            lines += [health_note, ""]
        if has_scores:
            failed = {e["label"] for e in entries if did_not_learn(e, min_gain)}
            nouns = subject_nouns(config["data"]["sources"].get(task, "") if config else "", task)
            body, notes, lines_of_headline, warning = statistics_table(
                comparisons[task], scores[scores["task"] == task], reference, failed, nouns, holm_family(comparisons))
            lines += [warning, ""] if warning else []                    # above the statistics it qualifies
            lines += [body, ""] if body else []
            for note in notes:
                lines += [note, ""]
            if headline is not None:
                prefix = f"{TASK_TITLES.get(task, task)}: " if len(tasks) > 1 else ""
                headline += [prefix + line for line in lines_of_headline]
    return "\n".join(lines)


def _candidate_value(metadata: dict, name: str):
    """The tuned value a candidate's name holds ("train.lr=0.004" -> 0.004), for a grid with one
    tuned key; None otherwise."""
    keys = list(metadata["tune"])
    _, _, text = name.partition("=")
    if len(keys) != 1 or not text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _bracketed(row: dict) -> str:
    if row.get("bracketed") is None:
        return "-"
    if row["bracketed"]:
        return "yes"
    values = [float(c.partition("=")[2]) for c in row["candidates"]]
    chosen = float(row["chosen"].partition("=")[2])
    return "no: at the top edge" if chosen == max(values) else "no: at the bottom edge"


# the AAPM data's quarter dose, phantom-ct's default (benchmark.data.sources.CT_PHANTOM_DOSE: render
# does not import data)
AAPM_CT_DOSE = 0.25


def _source_text(config: dict, task: str) -> str:
    """A task's data source as a table names it: `phantom-ct` with its low dose when not the AAPM's quarter."""
    source = config["data"]["sources"][task]
    dose = config["data"].get("phantom_ct_dose", AAPM_CT_DOSE)
    if source == "phantom-ct" and dose != AAPM_CT_DOSE:
        return f"`{source}` at {Fraction(dose).limit_denominator(1000)} of the full dose (the paper's data: {Fraction(AAPM_CT_DOSE)})"
    return f"`{source}`"


def tuning_table(metadata: dict, tuning: dict | None) -> str:
    """A tuned grid's choice by successive halving (``harness.tuning``): the rule (one paragraph),
    then per row each candidate's mean best validation PSNR over its tuning seeds at the last rung it
    reached, the chosen one in bold, and whether the row's optimum is bracketed."""
    keys = ", ".join(f"`{key}` in {{{', '.join(str(v) for v in values)}}}" for key, values in metadata["tune"].items())
    rungs = next((row["rungs"] for row in (tuning or {}).values() if row.get("rungs")), None)
    schedule = (f"to {rungs[0]} iterations, the better half (rounded up) continues to the next rung, the best one to "
                f"{rungs[-1]} (rungs {', '.join(map(str, rungs))}; the learning-rate schedule is the one over "
                f"{rungs[-1]})") if rungs else "to the first rung, the better half continues"
    n = metadata.get("tune_seeds")
    seeds = (f"on the row's first {'seed' if n == 1 else f'{n} seeds'} (the chosen candidate then trains on the "
             "row's other seeds)") if n else "on each of the row's seeds"
    how = (f"\nTuning by successive halving ({keys}): every candidate of a row trains {seeds} "
           f"{schedule}. A candidate's score is its best validation PSNR up to the rung, averaged over the "
           "seeds it trains on; a candidate with a failed run cannot continue. A row whose best candidate at the "
           "first rung sits at an edge of the values gets one more candidate beyond that edge. The row's result "
           "is the candidate that reaches the last rung; the validation split only: a candidate that was not "
           "chosen was never tested.\n\n")
    if not tuning:
        return how + "No choice yet: the candidates have not all reached their rungs.\n"
    order = {run["candidate"]: i for i, run in reversed(list(enumerate(metadata["runs"]))) if "candidate" in run}
    labels = [label for label in dict.fromkeys(run["label"] for run in metadata["runs"]) if label in tuning]
    names = sorted({c for row in tuning.values() for c in row["candidates"]}, key=lambda c: order.get(c, len(order)))
    if all(_candidate_value(metadata, c) is not None for c in names):
        names.sort(key=lambda c: _candidate_value(metadata, c))

    def cell(row: dict, name: str) -> str:
        result = row["candidates"].get(name)
        if result is None:
            return "-"
        if result["val_psnr"] is None:
            return f"failed ({result['failed']} of {result['runs']} runs)"
        at = f" at {result['iterations']}" if result.get("iterations") else ""
        extension = " (extension)" if name == row.get("extension") else ""
        return _decorate(f"{result['val_psnr']:.2f}", "best" if name == row["chosen"] else "") + at + extension
    rows = [[label, *(cell(row, c) for c in names), row["chosen"] or "none (every candidate failed)", _bracketed(row)]
            for label, row in ((label, tuning[label]) for label in labels)]
    judged = [tuning[label].get("bracketed") for label in labels if tuning[label].get("bracketed") is not None]
    count = f"\nThe optimum is bracketed (the chosen value inside the row's values) for {sum(judged)} of " \
            f"{len(judged)} rows.\n" if judged else ""
    return how + markdown.table(["Method", *(f"val PSNR, {c}" for c in names), "chosen", "bracketed"], rows) + "\n" + count
