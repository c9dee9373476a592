"""Fair tuning of a grid with a ``tune:`` key: the same candidates, budget and rule for every row.

Every row and seed trains once per candidate (``stages="train"``: trained and validated, state
``trained``); ``choose`` then takes, per row, the candidate with the best validation PSNR (each
run's best over its training, ``train.json``'s ``best_val_psnr``, averaged over the row's seeds;
ties go to the first candidate of the grid) and writes ``tuning.json``. Only the chosen
candidate's runs are tested: the test split is never read for the choice, nor for a candidate
that lost. A candidate whose run failed cannot be chosen; a row whose candidates all failed shows
its first candidate's failure (flag, never drop).
"""
from __future__ import annotations

from pathlib import Path

from benchmark.results import store
from benchmark.results.store import RunState


def outcomes(grid, grid_dir: Path) -> dict[str, dict]:
    """{run id: its state and best validation PSNR (None unless trained or done)}."""
    out = {}
    for spec in grid.specs:
        folder = grid_dir / spec.folder_name
        state = store.run_state(folder)["state"]
        psnr = None
        if state in (RunState.TRAINED, RunState.DONE):
            summary = store.read_train_summary(folder)
            psnr = summary["best_val_psnr"] if summary else None
        out[spec.id] = {"state": state, "val_psnr": psnr}
    return out


def choose(grid, grid_dir) -> dict | None:
    """Each row's chosen candidate (written to ``tuning.json``), or None while a candidate has no
    outcome yet (neither trained, done nor failed)."""
    grid_dir = Path(grid_dir)
    results = outcomes(grid, grid_dir)
    if any(r["state"] not in (RunState.TRAINED, RunState.DONE, RunState.FAILED) for r in results.values()):
        return None
    tuning: dict[str, dict] = {}
    for label in dict.fromkeys(s.label for s in grid.specs):
        specs = [s for s in grid.specs if s.label == label]
        candidates: dict[str, dict] = {}
        for spec in specs:
            entry = candidates.setdefault(spec.candidate, {"psnrs": [], "failed": 0, "ids": []})
            entry["ids"].append(spec.id)
            psnr = results[spec.id]["val_psnr"]
            if psnr is None:
                entry["failed"] += 1
            else:
                entry["psnrs"].append(psnr)
        scored = {c: sum(e["psnrs"]) / len(e["psnrs"]) for c, e in candidates.items() if e["psnrs"] and not e["failed"]}
        chosen = max(scored, key=lambda c: (scored[c], -list(candidates).index(c))) if scored else None
        ids = candidates[chosen if chosen is not None else next(iter(candidates))]["ids"]
        tuning[label] = {"chosen": chosen, "ids": ids,
                         "candidates": {c: {"val_psnr": scored.get(c), "runs": len(e["ids"]), "failed": e["failed"]}
                                        for c, e in candidates.items()}}
    store.write_json(grid_dir / store.TUNING, tuning)
    return tuning


def chosen_specs(grid, tuning: dict) -> list:
    """The specs of the chosen candidates, in grid order."""
    ids = store.chosen_ids(tuning)
    return [s for s in grid.specs if s.id in ids]
