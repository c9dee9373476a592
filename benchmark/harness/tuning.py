"""Fair tuning of a grid with a ``tune:`` key: successive halving, the same rule for every row.

The rule (halving rate 2), per row, each candidate on the row's tuning seeds (every seed of the
row, or its first ``tune_seeds`` seeds in grid order when the grid sets ``tune_seeds:``):

- **Rungs.** The budget ``B = train.iters`` is cut into ``b_k = B / 2^(R-k)``, ``k = 0..R``, with
  ``R = ceil(log2 n)`` for the grid's ``n`` candidates; each ``b_k`` is rounded to a multiple of
  ``train.val_every`` (at least one) and ``b_R = B``.
- **Training.** At rung ``k`` every surviving candidate trains to ``b_k`` iterations, continuing its
  own checkpoint (state ``partial`` in between): its learning-rate schedule is the one over ``B``,
  so a candidate's run is the first ``b_k`` iterations of the run it would be at full budget.
- **Score.** Its best validation PSNR up to ``b_k`` (``train_log.csv``), averaged over the row's
  tuning seeds. A candidate with a failed run has no score and stops: it cannot win.
- **Halving.** The better half continues (rounded up; only the best one before the last rung);
  ties go to the grid's order.
- **Edge extension.** After rung 0, a row whose best candidate is at an edge of the values of its
  (one, numeric) tuned key gets one more candidate beyond that edge (the edge value times the
  ratio of the edge to its neighbour: 4e-3 after 1e-3 gives 1.6e-2), trained to ``b_0`` and ranked
  with the others.
- **Choice.** The candidate that reaches ``B``. Its optimum is *bracketed* when it is not at an edge
  of the row's values, the extension included. With ``tune_seeds:`` the chosen candidate then
  trains and tests on the row's other seeds (in full, like any run); the losers never run on them.

Only the chosen candidate's runs are tested: the test split is never read for the choice, nor for
a candidate that lost. A row whose candidates all failed shows a failed candidate's runs (the last
survivor's, or the first candidate's when all failed at once): flag, never drop. Every decision is a function of the store, so a second invocation (or one
after ``--no-wait``) takes up where the first stopped.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.harness import config as cfg
from benchmark.harness.grid import Grid, RunSpec, candidate_text, spec_id
from benchmark.results import store
from benchmark.results.store import RunState

FULL = (RunState.TRAINED, RunState.DONE)


def rung_budgets(iters: int, val_every: int, candidates: int) -> list[int]:
    """The iterations of each rung: ``iters / 2^(R-k)`` for ``k = 0..R``, ``R = ceil(log2 candidates)``,
    rounded to multiples of ``val_every`` (a rung ends on a validation), the last one ``iters``."""
    rungs = max(1, math.ceil(math.log2(candidates)))
    budgets = [min(iters, max(val_every, round(iters / 2 ** (rungs - k) / val_every) * val_every))
               for k in range(rungs)]
    return budgets + [iters]


def halving_iterations(iters: int, val_every: int, candidates: int, extension: bool = True) -> int:
    """Iterations one row and seed trains over all its candidates by successive halving (with the
    edge extension when ``extension``: the most it can cost), against ``candidates * iters`` when
    every candidate trains in full."""
    budgets = rung_budgets(iters, val_every, candidates)
    alive = candidates + extension
    total = alive * budgets[0]
    for k in range(1, len(budgets)):
        alive = 1 if k == len(budgets) - 1 else math.ceil(alive / 2)
        total += alive * (budgets[k] - budgets[k - 1])
    return total


def _numbers(values: list) -> bool:
    return len(values) >= 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def beyond_edge(values: list, best) -> object | None:
    """The value one step beyond ``best`` when it is the smallest or largest of ``values`` (numbers):
    geometric for positive values (the edge times its ratio to its neighbour), else arithmetic;
    None when ``best`` is inside, or the values are not numbers."""
    if not _numbers(values):
        return None
    ordered = sorted(values)
    if best == ordered[-1]:
        edge, neighbour = ordered[-1], ordered[-2]
    elif best == ordered[0]:
        edge, neighbour = ordered[0], ordered[1]
    else:
        return None
    value = edge * (edge / neighbour) if min(ordered) > 0 else edge + (edge - neighbour)
    value = round(value) if all(isinstance(v, int) for v in values) else float(f"{value:.12g}")
    return None if value in values else value


def _set_key(config: dict, key: str, value) -> dict:
    config = json.loads(json.dumps(config))
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    return config


@dataclass
class Candidate:
    name: str                                  # "train.lr=0.004"
    specs: list[RunSpec]                       # one per seed of the row
    value: object = None                       # the tuned key's value (one tuned key only)
    extension: bool = False
    tune_seeds: int | None = None              # the first this many specs are compared (None: all)

    @property
    def tuned(self) -> list[RunSpec]:
        """The runs the candidate is compared on (its other seeds run only if it is chosen)."""
        return self.specs[:self.tune_seeds] if self.tune_seeds else self.specs


@dataclass
class RowProgress:
    """Where one row's halving stands: the runs it waits for (with the iteration each must reach),
    or its choice."""
    label: str
    candidates: list[Candidate]
    budgets: list[int]                                                          # the rungs' iterations
    scores: dict[str, tuple[float | None, int]] = field(default_factory=dict)   # name -> (score, at iteration)
    failed: dict[str, int] = field(default_factory=dict)                        # name -> its failed runs
    waiting: dict[str, int] = field(default_factory=dict)                       # spec id -> iterations to reach
    chosen: Candidate | None = None
    finished: bool = False
    shown: Candidate | None = None             # the candidate whose runs the table shows

    def record(self) -> dict:
        """This row's entry of ``tuning.json``: the choice, the runs shown, whether the optimum is
        bracketed (None: not a single numeric key, or nothing chosen), and each candidate's last
        score with the iteration it was scored at."""
        values = [c.value for c in self.candidates]
        bracketed = None
        if self.chosen is not None and _numbers(values):
            bracketed = min(values) < self.chosen.value < max(values)
        extension = next((c.name for c in self.candidates if c.extension), None)
        return {"chosen": self.chosen.name if self.chosen else None, "ids": [s.id for s in self.shown.specs],
                "bracketed": bracketed, "extension": extension, "rungs": self.budgets,
                "candidates": {c.name: {"val_psnr": self.scores.get(c.name, (None, 0))[0],
                                        "iterations": self.scores.get(c.name, (None, 0))[1],
                                        "runs": len(c.tuned), "failed": self.failed.get(c.name, 0)}
                               for c in self.candidates}}


def _reached(status: dict) -> float:
    """Iterations a run has trained (its rung if ``partial``, ``train.iters`` if finished)."""
    if status["state"] in FULL:
        return math.inf                                 # past every rung
    if status["state"] == RunState.PARTIAL:
        return int(status.get("iteration", 0))
    return 0


def _best_up_to(folder: Path, iteration: int) -> float | None:
    """A run's best validation PSNR at or before ``iteration`` (``train_log.csv``)."""
    log = store.read_train_log(folder)
    if log is None:
        return None
    scored = log[(log["iteration"] <= iteration) & log["val_psnr"].notna()]
    return float(scored["val_psnr"].max()) if len(scored) else None


class Halving:
    """Successive halving over a tuned grid's store (module docstring): what each row waits for,
    its extension and its choice, derived from the store alone."""

    def __init__(self, grid: Grid, grid_dir):
        self.grid, self.grid_dir = grid, Path(grid_dir)
        self.key = grid.tune[0][0] if len(grid.tune) == 1 else None
        self._statuses: dict[str, dict] = {}                  # read once per derivation
        self.extensions: list[RunSpec] = []
        self.rows = [self._row(label) for label in dict.fromkeys(s.label for s in grid.specs)]

    def _status(self, spec: RunSpec) -> dict:
        if spec.id not in self._statuses:
            self._statuses[spec.id] = store.run_state(self.grid_dir / spec.folder_name)
        return self._statuses[spec.id]

    def _candidates(self, label: str) -> list[Candidate]:
        out: dict[str, Candidate] = {}
        for spec in (s for s in self.grid.specs if s.label == label):
            value = None
            if self.key is not None:
                node = spec.config
                for part in self.key.split("."):
                    node = node[part]
                value = node
            out.setdefault(spec.candidate, Candidate(spec.candidate, [], value,
                                                     tune_seeds=self.grid.tune_seeds)).specs.append(spec)
        return list(out.values())

    def _extension(self, label: str, edge: Candidate, value) -> Candidate:
        specs = []
        for spec in edge.specs:
            config = _set_key(spec.config, self.key, value)
            cfg.validate(config, f"{self.grid.file} (row {label!r}, extension {self.key}={value})")
            index = len(self.grid.specs) + len(self.extensions)
            specs.append(RunSpec(spec_id(config), spec.slug, label, index, json.dumps(config, sort_keys=True),
                                 candidate_text({self.key: value})))
            self.extensions.append(specs[-1])
        return Candidate(specs[0].candidate, specs, value, extension=True, tune_seeds=self.grid.tune_seeds)

    def _score(self, candidate: Candidate, iteration: int, row: RowProgress) -> float | None:
        psnrs, failed = [], 0
        for spec in candidate.tuned:
            folder = self.grid_dir / spec.folder_name
            if self._status(spec)["state"] == RunState.FAILED:
                failed += 1
                continue
            psnr = _best_up_to(folder, iteration)
            if psnr is None:
                failed += 1
            else:
                psnrs.append(psnr)
        row.failed[candidate.name] = failed
        score = sum(psnrs) / len(psnrs) if psnrs and not failed else None
        row.scores[candidate.name] = (score, iteration)
        return score

    def _waiting(self, alive: list[Candidate], iteration: int) -> dict[str, int]:
        """The runs of ``alive`` that have neither reached ``iteration`` nor failed."""
        return {s.id: iteration for c in alive for s in c.tuned
                if self._status(s)["state"] != RunState.FAILED
                and _reached(self._status(s)) < iteration}

    def _row(self, label: str) -> RowProgress:
        candidates = self._candidates(label)
        first = candidates[0].specs[0].config["train"]
        budgets = rung_budgets(first["iters"], first["val_every"], len(candidates))
        row = RowProgress(label, candidates, budgets)
        alive = list(candidates)
        for k, budget in enumerate(budgets):
            row.waiting = self._waiting(alive, budget)
            if row.waiting:
                return row
            scores = {c.name: self._score(c, budget, row) for c in alive}
            if k == 0 and self.key is not None:
                scored = [c for c in alive if scores[c.name] is not None]
                if scored:
                    best = max(scored, key=lambda c: scores[c.name])         # first of the grid on a tie
                    value = beyond_edge([c.value for c in candidates], best.value)
                    if value is not None:
                        extension = self._extension(label, best, value)
                        row.candidates.append(extension)
                        alive.append(extension)
                        row.waiting = self._waiting([extension], budget)
                        if row.waiting:
                            return row
                        scores[extension.name] = self._score(extension, budget, row)
            ranked = sorted((c for c in alive if scores[c.name] is not None),
                            key=lambda c: -scores[c.name])                   # stable: grid order on ties
            last_to_run = alive[-1] if len(alive) == 1 else None
            if k == len(budgets) - 1 or not ranked:
                row.finished = True
                row.chosen = ranked[0] if ranked else None
                row.shown = row.chosen or last_to_run or candidates[0]
                return row
            alive = ranked[:1] if k == len(budgets) - 2 else ranked[:math.ceil(len(ranked) / 2)]
        raise AssertionError("unreachable: the last rung decides")

    @property
    def waiting(self) -> dict[str, int]:
        """{spec id: iterations it must reach} over every row."""
        return {key: until for row in self.rows for key, until in row.waiting.items()}

    @property
    def finished(self) -> bool:
        return all(row.finished for row in self.rows)

    def specs(self) -> list[RunSpec]:
        """The grid's specs and the extensions made so far (in index order)."""
        return [*self.grid.specs, *self.extensions]

    def extended_grid(self) -> Grid:
        return dataclasses.replace(self.grid, specs=tuple(self.specs()))

    def choice(self) -> dict:
        return {row.label: row.record() for row in self.rows}


def choose(grid: Grid, grid_dir) -> dict | None:
    """Each row's chosen candidate (written to ``tuning.json``), or None while a row still waits for
    runs to reach a rung."""
    halving = Halving(grid, grid_dir)
    if not halving.finished:
        return None
    tuning = halving.choice()
    store.write_json(Path(grid_dir) / store.TUNING, tuning)
    return tuning


def chosen_specs(grid: Grid, tuning: dict) -> list:
    """The specs of the chosen candidates, in grid order (``grid`` extended: ``Halving.extended_grid``)."""
    ids = store.chosen_ids(tuning)
    return [s for s in grid.specs if s.id in ids]
