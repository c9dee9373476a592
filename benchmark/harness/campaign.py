"""Running a grid once its file is read: its stale runs, the two phases of a tuned grid (its
candidates trained by successive halving, one chosen per row on validation: ``harness.tuning``;
the choice tested), the executor (here or SLURM) and the accounting of finished, failed and busy
runs.

``python -m benchmark.run`` parses the command line, calls ``run_grid`` and prints; ``run_grid``
decides and says what it does through ``say`` (one line each, on stderr by default).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from benchmark.results import health, staleness, store
from benchmark.results.store import RunState
from benchmark.harness import tuning
from benchmark.harness.grid import Grid, RunSpec


class CampaignError(RuntimeError):
    """The grid could not go on: a submission failed (``code`` 2) or a choice could not be made (1)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class Executor(Protocol):
    """Runs specs (their ``stages``: ``"train"`` or ``"all"``, and by spec id the iteration to train
    ``until``: see ``pipeline.run_spec``) and returns {spec id: final status}, or None when they
    were only submitted."""

    def run(self, specs: list[RunSpec], stages: str, until: dict[str, int] | None = None) -> dict | None: ...


@dataclass
class LocalExecutor:
    """Processes on this machine (``jobs`` at once)."""
    grid_dir: Path
    jobs: int | str = "auto"
    progress: bool = True

    def run(self, specs: list[RunSpec], stages: str, until: dict[str, int] | None = None) -> dict:
        from benchmark.harness.executors.local import auto_jobs, run_local
        jobs = auto_jobs(len(specs)) if self.jobs == "auto" else int(self.jobs)
        return run_local(specs, self.grid_dir, jobs, progress=self.progress, stages=stages, until=until)


@dataclass
class SlurmExecutor:
    """Job arrays through submitit; ``wait=False`` (``--no-wait``) submits and returns None."""
    grid_dir: Path
    profile: dict
    wait: bool = True

    def run(self, specs: list[RunSpec], stages: str, until: dict[str, int] | None = None) -> dict | None:
        from benchmark.harness.executors import slurm
        from benchmark.harness.executors.local import report
        try:
            results = slurm.run_slurm(specs, self.grid_dir, self.profile, wait_for_results=self.wait,
                                      report=report, stages=stages, until=until)
        except slurm.SlurmError as err:
            raise CampaignError(str(err), 2) from None
        return results if self.wait else None


@dataclass
class GridOutcome:
    """What a grid's command ended with. ``submitted``: the runs were only submitted (``--no-wait``)."""
    results: dict[str, dict] = field(default_factory=dict)       # spec id -> final status of what ran now
    tested: list[RunSpec] = field(default_factory=list)          # the runs the table shows
    submitted: str | None = None                                 # "candidates" or "runs" when only submitted
    seconds: float = 0.0

    def _state(self, state: str) -> list[str]:
        return [key for key, status in self.results.items() if status["state"] == state]

    @property
    def failed(self) -> list[str]:
        return [key for key, status in self.results.items() if status["state"] not in (*store.FINISHED, RunState.PARTIAL, RunState.BUSY)]

    @property
    def busy(self) -> list[str]:
        return self._state(RunState.BUSY)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed or self.busy else 0

    def summary(self, grid_name: str) -> str:
        """"grid x: 12 runs finished, 0 failed in 95 s"."""
        finished = len(self.results) - len(self.failed) - len(self.busy)
        busy = f", {len(self.busy)} skipped (another process is running them)" if self.busy else ""
        return f"grid {grid_name}: {finished} runs finished, {len(self.failed)} failed{busy} in {self.seconds:.0f} s"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def find_stale(grid: Grid, grid_dir: Path) -> list[RunSpec]:
    """The grid's finished runs made with other code than the current."""
    out = []
    for spec in grid.specs:
        folder = grid_dir / spec.folder_name
        if staleness.is_stale(store.run_state(folder), folder):
            out.append(spec)
    return out


def stale_line(stale: list[RunSpec], grid_dir: Path, keep: bool) -> str:
    """What the console says of the grid's stale runs, and why they are stale."""
    reasons = [staleness.reason(store.run_state(grid_dir / s.folder_name), grid_dir / s.folder_name) for s in stale]
    why = "; ".join(dict.fromkeys(reasons))
    action = "kept (--keep-stale); the table says so" if keep else "running them again (--keep-stale keeps them)"
    return f"{len(stale)} finished run(s) are stale: {why}; {action}"


def reset_stale(stale: list[RunSpec], grid_dir: Path) -> None:
    """Clear the results of stale runs so that they run again from scratch (a run that another
    process holds is left to it)."""
    for spec in stale:
        folder = grid_dir / spec.folder_name
        try:
            with store.run_lock(folder):
                store.clear_results(folder)
        except store.RunBusy:
            pass


def _state(grid_dir: Path, spec: RunSpec) -> str:
    return store.run_state(grid_dir / spec.folder_name)["state"]


def run_grid(grid: Grid, grid_dir: Path, executor: Executor, keep_stale: bool = False,
             say: Callable[[str], None] = _stderr) -> GridOutcome:
    """Run what the grid still needs: stale runs again (unless ``keep_stale``); a tuned grid's
    candidates first (trained only), then the chosen one of each row and seed tested; the rest as
    they are. Raises ``CampaignError`` when a submission fails or a choice cannot be made."""
    grid_dir = Path(grid_dir)
    stale = find_stale(tuning.Halving(grid, grid_dir).extended_grid() if grid.tune else grid, grid_dir)
    if stale:
        say(stale_line(stale, grid_dir, keep_stale))
        if not keep_stale:
            reset_stale(stale, grid_dir)
    start = time.time()
    outcome = GridOutcome(tested=list(grid.specs))
    if grid.tune:
        halving = _halve(grid, grid_dir, executor, outcome, say)
        if halving is None:
            return outcome
        choice = tuning.choose(grid, grid_dir)
        say("chosen on validation: " + "; ".join(f"{label} {row['chosen'] or 'none (every candidate failed)'}"
                                                 for label, row in choice.items()))
        outcome.tested = tuning.chosen_specs(halving.extended_grid(), choice)
    todo = [s for s in outcome.tested if _state(grid_dir, s) != RunState.DONE
            or store.unreadable(grid_dir / s.folder_name) is not None]      # done, but a result file is bad
    if grid.tune:
        todo = [s for s in todo if _state(grid_dir, s) != "failed"]
    say(f"grid {grid.name}: {len(outcome.tested)} runs at scale {grid.scale}, {len(outcome.tested) - len(todo)} "
        f"already done, {len(todo)} to run -> {grid_dir}")
    ran = executor.run(todo, "all")
    if ran is None:
        say(f"submitted; monitor with: python -m benchmark.status {grid_dir}")
        outcome.submitted = "runs"
        return outcome
    outcome.results.update(ran)
    outcome.seconds = time.time() - start
    return outcome


def _halve(grid: Grid, grid_dir: Path, executor: Executor, outcome: GridOutcome,
           say: Callable[[str], None]) -> tuning.Halving | None:
    """Train a tuned grid's candidates rung by rung (``harness.tuning``) until every row has chosen;
    the halving, or None when the runs were only submitted (``outcome.submitted``)."""
    rows = len({s.label for s in grid.specs})
    say(f"grid {grid.name}: {rows} rows, {len(grid.specs)} runs with their tune: candidates, trained by successive "
        f"halving -> {grid_dir}")
    halving, before = tuning.Halving(grid, grid_dir), None
    while not halving.finished:
        store.write_grid(grid_dir, halving.extended_grid().metadata())          # extensions are runs of the grid
        waiting = halving.waiting
        if waiting == before:
            raise CampaignError("some candidates have no outcome (another process runs them?); rerun to choose", 1)
        specs = [s for s in halving.specs() if s.id in waiting]
        rungs = sorted(set(waiting.values()))
        say(f"{len(specs)} candidate runs to train to iteration {', '.join(map(str, rungs))}")
        trained = executor.run(specs, "train", waiting)
        if trained is None:
            say(f"submitted the candidates; run the same command again to go on (the next rung, the choice, the "
                f"test), or monitor with: python -m benchmark.status {grid_dir}")
            outcome.submitted = "candidates"
            return None
        outcome.results.update(trained)
        halving, before = tuning.Halving(grid, grid_dir), waiting
    store.write_grid(grid_dir, halving.extended_grid().metadata())
    return halving


def not_learned(grid: Grid, grid_dir: Path) -> list[str]:
    """"k=5 (seed 0), +0.0 dB" for each finished run of the grid that did not learn."""
    out = []
    chosen = {r["id"] for r in store.chosen_runs(grid_dir, store.read_grid(grid_dir))}
    specs = tuning.Halving(grid, grid_dir).specs() if grid.tune else grid.specs       # with any extensions
    for spec in [s for s in specs if s.id in chosen]:
        status = store.run_state(grid_dir / spec.folder_name)
        if status["state"] == RunState.DONE and not health.learned(status):
            verdict = status["health"]
            failing = {t: v for t, v in (verdict.get("tasks") or {}).items() if not v["learned"]}
            gains = ", ".join(f"{t} {v['val_gain_db']:+.1f} dB" for t, v in failing.items()) if failing else \
                f"{verdict['val_gain_db']:+.1f} dB"
            out.append(f"{spec.label} (seed {spec.config['seed']}), {gains}")
    return out


def health_line(unlearned: list[str], runs: int, curves: str | None) -> str:
    """"1 of 12 runs did not learn: k=5 (seed 0), +0.0 dB; see tables/token_shift_curves.png"."""
    where = f"; see {curves}" if curves else ""
    return f"{len(unlearned)} of {runs} runs {health.DID_NOT_LEARN}: {'; '.join(unlearned)}{where}"
