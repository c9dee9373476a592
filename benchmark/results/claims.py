"""The paper's claims and what our runs say about each: the verdicts of the claims ledger.

``paper_claims.csv`` holds every claim Yang et al. make from Tables 1-8 and their text, one row
each: the table, the kind of claim, the task, the rows (``row_a`` is claimed better than ``row_b``),
the metric, the paper's difference (row A minus row B, in the metric's better direction), and the
paper's words. Kinds:

- ``better``: A beats B on the metric (task ``average``: the mean over the table's tasks);
- ``best``: A beats every other row of the table on the task;
- ``within``: A gains less than ``margin`` over B ("more recurrences gain little");
- ``same_cost``: A and B have the same deploy parameters and MACs;
- ``not_testable``: no trained grid can test it (``reason`` says why).

``distinct_from`` (``<table>:<row>``) names a row that a claim's row must not build the same network
as for the claim to test what it says (e.g. scanning alternately between blocks needs more than one
block per stage; with one it is the H-scan of Table 6).

``judge`` gives each claim a verdict from the evidence of the grids' stores (``TableEvidence``):
``confirmed`` / ``contradicted`` when the Holm-adjusted p (over the table's tested claims) is
under 0.05 and the difference goes the paper's way / the other way; ``not resolved`` otherwise;
``not testable`` (with the reason) when its grid has no store, a row is missing or did not learn,
or the rows build one network at this scale. Compute only; ``benchmark.render.claims`` writes the
ledger.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field, replace
from importlib import resources

import pandas as pd

from benchmark.results import stats

KINDS = ("better", "best", "within", "same_cost", "not_testable")
VERDICTS = ("confirmed", "not resolved", "contradicted", "not testable")
AVERAGE = "average"                          # the task of a claim about the mean over a table's tasks
ALPHA = 1 - stats.CONFIDENCE


@dataclass(frozen=True)
class Claim:
    id: str
    table: int                               # 0: the paper's text, not one of its tables
    kind: str
    task: str
    row_a: str
    row_b: str
    metric: str
    paper_delta: float | None
    margin: float | None
    distinct_from: tuple[int, str] | None
    words: str
    reason: str = ""                         # why a not_testable claim is


def load_claims(text: str | None = None) -> list[Claim]:
    """The claims of ``paper_claims.csv`` (or of ``text`` in its format), checked for kinds and fields."""
    text = text if text is not None else resources.files(__package__).joinpath("paper_claims.csv").read_text()
    claims = []
    for n, row in enumerate(csv.DictReader(text.splitlines()), start=2):
        where = f"paper_claims.csv line {n} (claim {row.get('id')!r})"
        if row["kind"] not in KINDS:
            raise ValueError(f"{where}: unknown kind {row['kind']!r}; expected one of {', '.join(KINDS)}")
        needs = {"better": ("task", "row_a", "row_b", "metric"), "best": ("task", "row_a", "metric"),
                 "within": ("task", "row_a", "row_b", "metric", "margin"), "same_cost": ("row_a", "row_b"),
                 "not_testable": ("reason",)}[row["kind"]]
        missing = [key for key in needs if not row[key]]
        if missing:
            raise ValueError(f"{where}: a {row['kind']} claim needs {', '.join(missing)}")
        if row["metric"] and row["metric"] not in stats.HIGHER_IS_BETTER:
            raise ValueError(f"{where}: unknown metric {row['metric']!r}")
        distinct = None
        if row["distinct_from"]:
            table, _, label = row["distinct_from"].partition(":")
            distinct = (int(table), label)
        claims.append(Claim(row["id"], int(row["table"]), row["kind"], row["task"], row["row_a"], row["row_b"],
                            row["metric"], float(row["paper_delta"]) if row["paper_delta"] else None,
                            float(row["margin"]) if row["margin"] else None, distinct, row["words"],
                            row.get("reason") or ""))
    return claims


@dataclass
class TableEvidence:
    """What one grid's store says, as far as the claims need it."""
    grid: str
    scale: str
    scores: pd.DataFrame                     # store.load_image_scores: per (run, image)
    finished: dict[str, set[str]]            # task -> labels with a finished run on it
    failed: dict[str, set[str]]              # task -> labels that did not learn (marked ✗ in the table)
    networks: dict[str, str] = field(default_factory=dict)               # label -> network signature
    costs: dict[str, tuple[float, float]] = field(default_factory=dict)  # label -> (deploy params, MACs)
    tasks: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    verdict: str
    why: str = ""
    difference: float | None = None         # ours, A minus B in the metric's better direction
    low: float | None = None
    high: float | None = None
    seeds: tuple[int, int] | None = None
    p_value: float | None = None
    p_holm: float | None = None


def _oriented(c: stats.Comparison, metric: str) -> tuple[float, float, float]:
    """(difference, low, high) with positive meaning better on ``metric``."""
    if stats.HIGHER_IS_BETTER[metric]:
        return c.difference, c.low, c.high
    return -c.difference, -c.high, -c.low


def _task_scores(evidence: TableEvidence, task: str) -> pd.DataFrame | str:
    """The scores a claim on ``task`` is tested on; for the average over tasks, every task's images
    pooled (the mean of the task means when the tasks have as many test images each), or why not."""
    if task != AVERAGE:
        return evidence.scores[evidence.scores["task"] == task]
    counts = evidence.scores.groupby("task")["index"].nunique()
    if counts.nunique() != 1:
        return (f"the paper's average is the mean of the task means; here the tasks have "
                f"{', '.join(f'{t}: {n}' for t, n in counts.items())} test images, so pooling them would weigh "
                "the tasks unequally")
    pooled = evidence.scores.assign(index=evidence.scores["task"] + ":" + evidence.scores["index"].astype(str),
                                    subject=evidence.scores["task"] + ":" + evidence.scores["subject"].astype(str))
    return pooled


def _missing(evidence: TableEvidence, task: str, rows: list[str]) -> str:
    tasks = evidence.tasks if task == AVERAGE else [task]
    for row in rows:
        for t in tasks:
            if row not in evidence.finished.get(t, set()):
                return f"{row} has no finished run on {t} in runs/{evidence.grid}"
    for row in rows:
        for t in tasks:
            if row in evidence.failed.get(t, set()):
                return f"{row} did not learn at this scale ({t}): its numbers say training failed"
    return ""


def _same_network(claim: Claim, evidence: dict[int, TableEvidence]) -> str:
    mine = evidence[claim.table].networks
    a, b = mine.get(claim.row_a), mine.get(claim.row_b)
    if a and b and a == b:
        return f"{claim.row_a} and {claim.row_b} build the same network at this scale"
    if claim.distinct_from:
        table, label = claim.distinct_from
        other = evidence.get(table)
        theirs = other.networks.get(label) if other else None
        for row, signature in ((claim.row_a, a), (claim.row_b, b)):
            if theirs and signature == theirs:
                return (f"{row} builds the same network as {label} (Table {table}) at this scale, so it is not "
                        "the design the claim is about")
    return ""


def _tested(claim: Claim, evidence: dict[int, TableEvidence], resamples: int) -> Verdict:
    """The verdict before the Holm adjustment (``p_holm`` unset), or the reason it is not testable."""
    if claim.kind == "not_testable":
        return Verdict(claim, "not testable", claim.reason)
    table = evidence.get(claim.table)
    if table is None:
        return Verdict(claim, "not testable", f"Table {claim.table}'s grid has no store under runs/")
    rows = [claim.row_a] if claim.kind == "best" else [claim.row_a, claim.row_b]
    if claim.kind == "best":
        rows += sorted(table.finished.get(claim.task, set()) - {claim.row_a})
    reason = _missing(table, claim.task, rows) or _same_network(claim, evidence)
    if reason:
        return Verdict(claim, "not testable", reason)
    if claim.kind == "same_cost":
        a, b = table.costs.get(claim.row_a), table.costs.get(claim.row_b)
        if a is None or b is None:
            return Verdict(claim, "not testable", "a row has no profile")
        same = all(abs(x - y) <= 1e-9 * max(abs(x), abs(y), 1.0) for x, y in zip(a, b))
        return Verdict(claim, "confirmed" if same else "contradicted",
                       f"deploy params {a[0]:.4f} vs {b[0]:.4f} M, MACs {a[1]:.4f} vs {b[1]:.4f} G")
    scores = _task_scores(table, claim.task)
    if isinstance(scores, str):
        return Verdict(claim, "not testable", scores)
    seeds = lambda label: int(scores[scores["label"] == label]["seed"].nunique())  # noqa: E731
    if claim.kind == "best":
        result = stats.compare(scores, rows[1:] + [claim.row_a], claim.row_a, claim.metric, resamples)[:-1]
        against = {}                        # other row -> (A minus it, low, high, p), positive: A better
        for c in result:
            d, low, high = _oriented(c, claim.metric)
            against[c.label] = (-d, -high, -low, c.p_value)
        beaten_by = [label for label, (d, _, _, p) in against.items() if d < 0 and p < ALPHA]
        if beaten_by:                       # a row resolved better than A: the claim's test is that one
            label = min(beaten_by, key=lambda k: against[k][3])
            d, low, high, p = against[label]
            why = f"{label} is better"
        else:                               # A beats every row: an intersection-union test, the largest p
            label = min(against, key=lambda k: against[k][0])
            d, low, high, _ = against[label]
            p = max(x[3] for x in against.values()) if all(x[0] > 0 for x in against.values()) else 1.0
            why = f"closest: {label}"
        return Verdict(claim, "", why, d, low, high, (seeds(claim.row_a), seeds(label)), p)
    result = stats.compare(scores, [claim.row_b, claim.row_a], claim.row_b, claim.metric, resamples)[1]
    d, low, high = _oriented(result, claim.metric)
    return Verdict(claim, "", "", d, low, high, (seeds(claim.row_a), seeds(claim.row_b)), result.p_value)


def _decide(v: Verdict) -> Verdict:
    """The verdict of a tested claim from its Holm-adjusted p (``within``: from its interval)."""
    if v.verdict:
        return v
    if v.claim.kind == "within":
        margin = v.claim.margin
        verdict = ("confirmed" if v.high < margin else "contradicted" if v.low > margin else "not resolved")
        return replace(v, verdict=verdict, why=f"margin {margin:g} dB: the gain's interval is "
                       + ("under it" if verdict == "confirmed" else "over it" if verdict == "contradicted" else
                          "across it"))
    if v.p_holm is not None and v.p_holm < ALPHA:
        v = replace(v, verdict="confirmed" if v.difference > 0 else "contradicted")
        if v.seeds and min(v.seeds) < 2:                 # the interval holds no seed-to-seed spread
            why = "one seed per row: it holds for these trained models, not for another training run"
            v = replace(v, why=f"{v.why}; {why}" if v.why else why)
        return v
    return replace(v, verdict="not resolved")


def judge(claims: list[Claim], evidence: dict[int, TableEvidence], resamples: int = stats.RESAMPLES) -> list[Verdict]:
    """Every claim's verdict (in order). Holm adjusts the p-values of each table's tested
    ``better`` and ``best`` claims as one family."""
    verdicts = [_tested(c, evidence, resamples) for c in claims]
    for table in {c.table for c in claims}:
        family = [i for i, v in enumerate(verdicts) if v.claim.table == table and not v.verdict
                  and v.claim.kind in ("better", "best")]
        for i, adjusted in zip(family, stats.holm([verdicts[i].p_value for i in family])):
            verdicts[i] = replace(verdicts[i], p_holm=adjusted)
    return [_decide(v) for v in verdicts]
