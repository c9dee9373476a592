"""The claims ledger: every claim of the paper (``benchmark.results.claims``) with what the grid
stores under one runs folder say about it, written as ``tables/claims.md``; and the evidence of the
stores that the tables use too (which rows build the same network).

    python -m benchmark.render runs/token_shift     # re-renders tables/claims.md from every store in runs/
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pandas as pd

from benchmark.base import markdown, provenance
from benchmark.base.vocabulary import TASKS
from benchmark.results import claims as paper_claims
from benchmark.results import staleness, stats, store
from benchmark.render.tables import _p, _summaries, commit_text, did_not_learn, seeds_text

LEDGER = "claims.md"


class GridStore(NamedTuple):
    metadata: dict                          # grid.json
    evidence: paper_claims.TableEvidence
    stale: int                              # finished runs made with other code than the current
    index: pd.DataFrame                     # store.load_index: per (run, task)
    commits: dict[str, list[str]]           # label -> its finished runs' commits (tables.commit_text)
    min_gain: float                         # train.min_gain of the grid's runs


def table_evidence(grid_dir: Path) -> GridStore:
    """What a grid's store says, for the ledger."""
    metadata = store.read_grid(grid_dir)
    index = store.load_index(grid_dir)
    scores = store.load_image_scores(grid_dir)
    spec = next((s for s in (store.read_spec(grid_dir / r["folder"]) for r in store.chosen_runs(grid_dir, metadata))
                 if s), None)
    config = (spec or {}).get("config", {})
    tasks = list(TASKS[config["task"]]) if config else sorted(set(index["eval_task"].dropna()))
    min_gain = config.get("train", {}).get("min_gain", 0.0)
    finished, failed = {}, {}
    for task in tasks:
        entries = _summaries(index, task)
        finished[task] = {e["label"] for e in entries if e["done"]}
        failed[task] = {e["label"] for e in entries if did_not_learn(e, min_gain)}
    first = index.drop_duplicates("label") if len(index) else index
    networks = {row["label"]: row["network"] for _, row in first.iterrows()
                if isinstance(row.get("network"), str) and row["network"]}
    costs = {row["label"]: (float(row["deploy_params_m"]), float(row["paper_gmacs"])) for _, row in first.iterrows()
             if pd.notna(row.get("deploy_params_m")) and pd.notna(row.get("paper_gmacs"))}
    evidence = paper_claims.TableEvidence(metadata["name"], metadata.get("scale", "?"), scores, finished, failed,
                                          networks, costs, tasks)
    stale, commits = 0, {}
    for run in store.chosen_runs(grid_dir, metadata):
        status = store.read_status(grid_dir / run["folder"])
        if status.get("state") == "done":
            environment = store.read_environment(grid_dir / run["folder"])
            stale += staleness.is_stale(status, grid_dir / run["folder"])
            commits.setdefault(run["label"], []).append(commit_text(environment or {}))
    return GridStore(metadata, evidence, stale, index, commits, min_gain)


def gather_all(runs_root: Path) -> list[GridStore]:
    """Every readable grid store under ``runs_root``, in folder order (an unreadable one says nothing
    here; its own render names the file)."""
    found = []
    for grid_dir in sorted(p for p in Path(runs_root).iterdir() if (p / "grid.json").is_file()):
        try:
            found.append(table_evidence(grid_dir))
        except (OSError, store.StoreError):
            continue
    return found


def by_table(stores: list[GridStore]) -> dict[int, GridStore]:
    """Per paper table, the store that renders it (a built-in grid's store, recorded by its name or,
    before grids were found by name, as ``ablations/<name>.yaml``, before any other store with the
    same table)."""
    found: dict[int, GridStore] = {}
    for grid in stores:
        table = grid.metadata.get("table")
        if not table or (table in found and _built_in(str(found[table].metadata.get("file", "")))):
            continue
        found[table] = grid
    return found


def _built_in(recorded: str) -> bool:
    return recorded.startswith("ablations/") or ("/" not in recorded and not recorded.endswith(".yaml"))


def gather(runs_root: Path) -> dict[int, GridStore]:
    """``by_table(gather_all(runs_root))``."""
    return by_table(gather_all(runs_root))


def same_networks(grid: str, found: dict[int, GridStore]) -> dict[str, list[str]]:
    """The rows of ``grid`` that build the same network as other rows, of it or of the other tables'
    stores under another label: label -> those rows ('k=5', or 'M=2 (Table 6)'). A row of another
    table with the same label (SwinIR in Tables 1 and 2) is the same configuration, not news."""
    mine = next((g.evidence for g in found.values() if g.evidence.grid == grid), None)
    if mine is None:
        return {}
    same = {}
    for label, signature in mine.networks.items():
        others = [other for other, s in mine.networks.items() if s == signature and other != label]
        others += [f"{other} (Table {table})" for table, g in sorted(found.items()) if g.evidence.grid != grid
                   for other, s in g.evidence.networks.items() if s == signature and other != label]
        if others:
            same[label] = others
    return same


def _digits(metric: str) -> int:
    return 4 if metric == "ssim" else 2


def _delta(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    unit = " dB" if metric == "psnr" else ""
    return f"{value:+.{_digits(metric)}f}{unit}"


def _rows(claim: paper_claims.Claim) -> str:
    if claim.kind == "best":
        return f"{claim.row_a} vs every other row"
    if claim.row_a and claim.row_b:
        return f"{claim.row_a} vs {claim.row_b}"
    return "-"


def _ours(v: paper_claims.Verdict) -> str:
    if v.difference is None:
        return "-"
    digits = _digits(v.claim.metric)
    return f"{v.difference:+.{digits}f} [{v.low:+.{digits}f}, {v.high:+.{digits}f}]"


def render_ledger(found: dict[int, GridStore], out_dir, runs_root: str = "runs",
                  resamples: int = stats.RESAMPLES) -> Path:
    """Write ``<out_dir>/claims.md`` from the evidence of ``gather``; returns its path."""
    claims = paper_claims.load_claims()
    verdicts = paper_claims.judge(claims, {t: g.evidence for t, g in found.items()}, resamples)
    counts = {name: sum(v.verdict == name for v in verdicts) for name in paper_claims.VERDICTS}
    lines = ["# The paper's claims against our runs", "",
             f"Rendered by `python -m benchmark.render` from the grid stores under `{runs_root}/` (and after every grid "
             f"run). Each of the {len(claims)} claims Yang et al. make from Tables 1-8 and their text is kept as data "
             "(`benchmark/results/paper_claims.csv`: table, rows, metric, the paper's difference and words) and "
             "tested on our runs: our difference (row A minus row B, positive in the paper's direction) with its 95% "
             "interval (the tables' hierarchical bootstrap: seeds, then subjects, then slices), and the p-value of "
             "the same resampling, Holm-adjusted over the tested claims of its table. Verdicts: **confirmed** (adjusted "
             "p < 0.05, the paper's direction), **contradicted** (adjusted p < 0.05, the other direction), **not "
             "resolved** (the runs cannot tell at this scale), **not testable** (and why). A verdict holds for our "
             "runs at their scale and data (see each table's scale); at smoke scale a confirmed claim is a "
             "difference large enough to show on phantoms with tiny models, not a reproduction of the paper. With "
             "fewer than 5 seeds per row the bootstrap sees few training runs and understates their spread (the "
             "seeds column says how many).", "",
             "**" + " · ".join(f"{name}: {n}" for name, n in counts.items()) + f"** (of {len(claims)})", ""]
    rows = []
    for table in sorted({c.table for c in claims if c.table}):
        if table in found:
            e = found[table].evidence
            seeds = sorted(set(int(s) for s in e.scores["seed"].dropna().unique())) if len(e.scores) else []
            rows.append([f"[Table {table}](#table-{table})", f"`{e.grid}` ([`{e.grid}.md`]({e.grid}.md))", e.scale,
                         seeds_text(seeds) or "-", str(e.scores["id"].nunique() if len(e.scores) else 0),
                         str(found[table].stale)])
        else:
            rows.append([f"[Table {table}](#table-{table})", f"no store under `{runs_root}/`", "-", "-", "0", "-"])
    lines += [markdown.table(["table", "grid", "scale", "seeds", "finished runs",
                              f"stale runs (code other than {provenance.code_hash()})"], rows, "llllrr"), ""]
    for table in sorted({c.table for c in claims}, key=lambda t: (t == 0, t)):    # the text's claims last
        mine = [v for v in verdicts if v.claim.table == table]
        title = f"Table {table}" if table else "The text (no table)"
        lines += [f"## {title}", ""]
        if table in found:
            e = found[table].evidence
            lines += [f"{found[table].metadata.get('title') or e.grid}: grid `{e.grid}` at scale `{e.scale}`.", ""]
        body = [[v.claim.id, v.claim.words, _rows(v.claim),
                 "equal" if v.claim.kind == "same_cost" else _delta(v.claim.paper_delta, v.claim.metric),
                 _ours(v), f"{v.seeds[0]} / {v.seeds[1]}" if v.seeds else "-", _p(v.p_value), _p(v.p_holm),
                 f"**{v.verdict}**" + (f": {v.why}" if v.why else "")] for v in mine]
        lines += [markdown.table(["#", "claim", "rows (A vs B)", "paper Δ", "ours Δ [95% CI]", "seeds (A / B)", "p",
                                  "p (Holm)", "verdict"], body, "lllrrrrrl"), ""]
    path = Path(out_dir) / LEDGER
    store.write_text(path, "\n".join(lines))
    return path

