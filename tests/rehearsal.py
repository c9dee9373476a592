"""The paper-scale rehearsal: the real data layouts at their real sizes, prepared, and the paper's
grids run with their full-size models at the paper's batch and crop through SLURM job arrays, with
one array task preempted mid-run and requeued, and the tables rendered. Shortened only in counts
(iterations, validation and test slices, ERF images, seeds, subjects). The last but one command
is the slow test's (``tests/harness/test_rehearsal.py``), the last CI's.

    bash slurm/dev-cluster/start.sh                     # a single-node SLURM on this machine
    python -m tests.rehearsal --out /tmp/rehearsal      # every grid, every row (hours on 2 CPU cores)
    python -m tests.rehearsal --out /tmp/r --grids mri_sr ct_denoise pet_synthesis --rows 2 --few-subjects
    python -m tests.rehearsal --out /tmp/r --shrink     # CI's: tiny presets, few subjects, seconds per run

Prints each phase's wall time and exits 1 if a run failed, the preempted task did not resume from
its checkpoint or a table is missing.

With full-size models on a small machine two things are adjusted, and printed: the array tasks run
one at a time with every CPU (a full-size model at batch 4 takes up to 14 GB here; two at once
would not fit), and a row whose measured peak memory at the paper's batch (``tables/plan-costs.json``,
the plans' measurements) exceeds 60% of this machine's memory (``STEP_SHARE``) trains at the
largest halved batch that fits.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmark.harness import plan
from benchmark.harness.executors import slurm
from benchmark.harness.grid import load_grid
from benchmark.results import store
from tests import layouts

ROOT = Path(__file__).resolve().parents[1]
GRIDS = ("mri_sr", "ct_denoise", "pet_synthesis", "all_in_one", "token_shift", "scan_design", "recurrence",
         "components")
# Subjects generated per set: IXI at a tenth of its 578 (its prepared slices would take 30 GB), the
# AAPM split in full (2,378 one-millimetre pairs), PET at a tenth of 159.
SUBJECTS = {"ixi": 58, "pet": 16}
# Two iterations (a checkpoint after the first, for the preemption; one validation at the end), one
# validation and one test slice of the real size: at 512x512 a full-size model's forward takes up to
# 4 minutes on 2 CPU cores (RWKV-IR), the most of the rehearsal's time.
SHORT = ["train.iters=2", "train.val_every=2", "train.checkpoint_every=1", "train.val_images=1", "test.images=1",
         "erf.images=1", "profile.latency_repeat=1"]
SHRUNK = ["model.size=tiny", "train.iters=300", "train.val_every=150", "train.checkpoint_every=10", "train.batch=1",
          "train.crop=32", "train.val_images=2", "test.images=2", "erf.images=1", "erf.size=32", "profile.size=32",
          "profile.latency_repeat=1"]


def _say(text: str) -> None:
    print(f"[rehearsal] {text}", flush=True)


def make_raw(out: Path, few: bool) -> dict[str, Path]:
    raw = out / "raw"
    if few:
        layouts.write_ixi(raw / "ixi", 3)
        layouts.write_aapm(raw / "aapm", slices=(6, 6, 6), thick_series=True)
        layouts.write_pet(raw / "pet", 3, shape=(192, 192, 12))
    else:
        layouts.write_ixi(raw / "ixi", SUBJECTS["ixi"])
        layouts.write_aapm(raw / "aapm")
        layouts.write_pet(raw / "pet", SUBJECTS["pet"])
    return {"mri_sr": raw / "ixi", "ct_denoise": raw / "aapm", "pet_synthesis": raw / "pet"}


def prepare(raw: dict[str, Path], out: Path) -> dict[str, str]:
    data = out / "data"
    targets = {"mri_sr": data / "mri", "ct_denoise": data / "ct", "pet_synthesis": data / "pet"}
    for task, target in targets.items():
        if (target / "manifest.json").is_file():
            continue
        extra = ["--series", "1mm"] if task == "ct_denoise" else []
        start = time.time()
        subprocess.run([sys.executable, "-m", "benchmark.data", "prepare", task, "--src", str(raw[task]),
                        "--out", str(target), "--quiet", *extra], check=True)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        manifest = json.loads((target / "manifest.json").read_text())
        counts = " / ".join(str(manifest["splits"][s]["count"]) for s in ("train", "val", "test"))
        _say(f"prepared {task}: {counts} slices of {manifest['splits']['test']['shape']} in "
             f"{time.time() - start:.0f} s (peak memory of the preparations so far: {peak:.0f} MB)")
    if not (data / "all" / "manifest.json").is_file():
        subprocess.run([sys.executable, "-m", "benchmark.data", "prepare", "all_in_one", "--from",
                        *map(str, targets.values()), "--out", str(data / "all"), "--quiet"], check=True)
    return {"single": {t: str(p) for t, p in targets.items()}, "all": {t: str(data / "all") for t in targets}}


def machine_memory_mb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 20


# What a training step's peak memory depends on; not the machine that measured it (CPU memory)
MEMORY_KEYS = ("network", "batch", "crop", "precision")
# The share of the machine's memory a step's measured peak may take: the run's process also
# validates at the real slice size and keeps what the allocator does not return. SwinIR's step at
# batch 2 measured 16.4 GB, and its run was killed at 23.2 GB on this 23.5 GB machine.
STEP_SHARE = 0.6


def fitting_batch(config: dict, costs: dict, memory_mb: float) -> tuple[int, str] | None:
    """(batch, why) for a row whose measured peak memory at its batch exceeds ``memory_mb``: the
    largest halved batch measured to fit (its own batch when none was); None when it fits or was
    never measured."""
    want = json.loads(plan.cost_key(config, plan.workload(config)))
    same = [k for k in costs if all(json.loads(k).get(field) == want[field] for field in MEMORY_KEYS)]
    if not same:
        return None
    cost = plan.canonical(costs, same[0])
    peak = (plan.usable(cost) or {}).get("peak_mb")
    if peak is not None and peak <= memory_mb:                 # measured, or estimated, to fit
        return None
    measured = f"{peak / 1024:.1f} GB{'' if cost.get('outcome') == 'ok' else ' estimated'}" if peak is not None \
        else "out of memory"
    fits = [m for m in cost.get("smaller", []) if m["outcome"] == "ok" and m["peak_mb"] <= memory_mb]
    if not fits:                                    # left at its batch: the run says whether it fits
        return config["train"]["batch"], (f"{measured} at batch {config['train']['batch']} and no smaller batch "
                                           f"measured to fit the {memory_mb / 1024:.1f} GB a step may take here")
    best = max(fits, key=lambda m: m["batch"])
    return best["batch"], (f"{measured} at batch {config['train']['batch']}, {best['peak_mb'] / 1024:.1f} GB at "
                           f"batch {best['batch']}; a step may take {memory_mb / 1024:.1f} GB here")


def rehearsal_profile(name: str, out: Path) -> str:
    """The profile with each array task given every CPU of the node (SLURM then runs one at a time)
    and two hours per attempt: what full-size models at the paper's batch need on one small machine."""
    profile = {k: v for k, v in slurm.load_profile(name).items()
               if k in slurm.PROFILE_KEYS and v != slurm.PROFILE_KEYS[k]}
    profile.update(cpus_per_task=os.cpu_count(), time_min=max(120, profile.get("time_min", 0)))
    path = out / "rehearsal-cluster.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return str(path)


def shortened_grid(name: str, rows: int | None, folder: Path, costs: dict | None = None,
                   memory_mb: float = 0.0) -> Path:
    """The grid's file with its first seed only and, with ``rows``, the reference and the first
    ``rows - 1`` other rows; with ``costs``, rows that do not fit ``memory_mb`` at the paper's batch
    train at a smaller batch (``fitting_batch``)."""
    grid = yaml.safe_load((ROOT / "benchmark" / "grids" / f"{name}.yaml").read_text())
    axes = grid["axes"]
    if "seed" in axes:
        axes["seed"] = axes["seed"][:1]
    if rows is not None:
        labels = axes["zip"]["label"]
        keep = [i for i, label in enumerate(labels) if label != grid.get("reference")][:rows - 1]
        keep += [labels.index(grid["reference"])] if grid.get("reference") in labels else []
        axes["zip"] = {key: [values[i] for i in sorted(keep)] for key, values in axes["zip"].items()}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    if costs:
        specs = load_grid(path, "paper").specs
        adjusted = {s.label: fitting_batch(s.config, costs, memory_mb) for s in specs}
        if any(adjusted.values()):
            default = specs[0].config["train"]["batch"]
            axes["zip"]["train.batch"] = [adjusted[label][0] if adjusted.get(label) else default
                                          for label in axes["zip"]["label"]]
            for label, change in adjusted.items():
                if change:
                    _say(f"{name}: {label} trains at batch {change[0]} ({change[1]})")
            path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def _run_command(grid: Path, out: Path, sources: dict, settings: list[str], cluster: str, wait: bool,
                 keep_stale: bool = False) -> list[str]:
    command = [sys.executable, "-m", "benchmark.run", "--grid", str(grid), "--scale", "paper", "--executor", "slurm",
               "--cluster", cluster, "--out", str(out / "runs"), "--tables", str(out / "tables"), "--quiet",
               "--set", f"data.sources={json.dumps(sources)}"]
    command += [a for s in settings for a in ("--set", s)] + (["--keep-stale"] if keep_stale else [])
    return command + ([] if wait else ["--no-wait"])


def preempt_one_task(grid_dirs: list[Path], timeout_s: float = 3600) -> tuple[Path, str, int] | None:
    """Once a run of the grids has checkpointed, preempt its array task as SLURM does (SIGTERM, then
    submitit's USR2: checkpoint and requeue) and let it start again at once; returns its folder, job
    and the attempt that was preempted, or None when every run ended first."""
    deadline = time.time() + timeout_s
    tried: set[str] = set()                                  # jobs that ended before their signal came
    while time.time() < deadline:
        folders = [p for grid_dir in grid_dirs for p in sorted(grid_dir.iterdir()) if (p / "spec.json").is_file()]
        states = {folder: store.run_state(folder)["state"] for folder in folders}
        for folder, state in states.items():
            if state != "running" or not (folder / "checkpoint.pt").is_file():
                continue
            job = store.read_json(folder / "slurm.json")["job_id"]
            attempt = store.run_state(folder).get("attempts", 0)
            if job in tried:
                continue
            # scancel fails when the task has just ended (or its checkpoint is an earlier attempt's and the
            # task has not started yet): then another task is tried
            if subprocess.run(["scancel", job, "--signal", "SIGTERM"]).returncode != 0 or \
                    subprocess.run(["scancel", job, "--signal", "USR2"]).returncode != 0:
                tried.add(job)
                continue
            for _ in range(600):
                state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout
                if state.strip() == "PENDING":
                    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
                    return folder, job, attempt
                time.sleep(0.1)
            return None                                      # it ended before the signal came: try no other
        queued = subprocess.run(["squeue", "-h", "-n", "medir-bench", "-o", "%i"], capture_output=True, text=True)
        if not queued.stdout.strip() and folders and all(s in ("done", "failed") for s in states.values()):
            return None
        time.sleep(0.1)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.rehearsal", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="a folder for the raw data, prepared data, store and tables")
    parser.add_argument("--grids", nargs="+", default=list(GRIDS), choices=GRIDS)
    parser.add_argument("--rows", type=int, help="the reference and the first ROWS - 1 other rows of each grid "
                                                 "(default: every row)")
    parser.add_argument("--few-subjects", action="store_true",
                        help="three subjects per set (of the real sizes, PET with 12 slices) instead of the defaults")
    parser.add_argument("--shrink", action="store_true", help="--few-subjects, tiny presets and 32x32 crops (CI)")
    parser.add_argument("--cluster", default="dev", help="a SLURM profile (default: dev)")
    parser.add_argument("--keep-stale", action="store_true",
                        help="keep finished runs made with other code (a rehearsal resumed after a fix: only its "
                             "failed or missing runs run; the tables say which are kept)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    started, phases = time.time(), {}

    start = time.time()
    raw = make_raw(out, args.few_subjects or args.shrink) if not (out / "raw").is_dir() else {
        "mri_sr": out / "raw" / "ixi", "ct_denoise": out / "raw" / "aapm", "pet_synthesis": out / "raw" / "pet"}
    phases["raw data"] = time.time() - start
    _say(f"raw data in the real layouts under {out / 'raw'} ({phases['raw data']:.0f} s)")
    start = time.time()
    sources = prepare(raw, out)
    phases["preparation"] = time.time() - start

    settings = SHRUNK if args.shrink else SHORT
    costs = {} if args.shrink else plan.load_costs(ROOT / "tables" / "plan-costs.json")
    step_mb = STEP_SHARE * machine_memory_mb()
    grids = {name: shortened_grid(name, args.rows, out / "grids", costs, step_mb) for name in args.grids}
    cluster = args.cluster if args.shrink else rehearsal_profile(args.cluster, out)
    if not args.shrink:
        _say(f"array tasks one at a time with {os.cpu_count()} CPUs each ({cluster})")
    commands = {name: _run_command(path, out, sources["all" if name == "all_in_one" else "single"], settings,
                                   cluster, wait=False, keep_stale=args.keep_stale) for name, path in grids.items()}
    start = time.time()
    for name, command in commands.items():                       # everything queued: the arrays overlap
        subprocess.run(command, check=True, cwd=ROOT)
    preempted = preempt_one_task([out / "runs" / name for name in args.grids])
    _say(f"preempted {preempted[0].name} (job {preempted[1]}) mid-run" if preempted else
         "no task could be preempted mid-run")
    failed = []
    for name, command in commands.items():
        done = subprocess.run(command[:-1], cwd=ROOT)             # waits for the arrays, renders the table
        if done.returncode != 0:
            failed.append(name)
    phases["grids on SLURM"] = time.time() - start

    problems = [f"grid {name} has failed runs (python -m benchmark.status {out / 'runs' / name})" for name in failed]
    problems += [f"no table {name}.md" for name in args.grids if not (out / "tables" / f"{name}.md").is_file()]
    if preempted is None:
        problems.append("no array task was preempted")
    else:
        train = store.read_json(preempted[0] / "train.json") or {}
        attempts = store.run_state(preempted[0]).get("attempts")
        _say(f"the preempted run: {attempts} attempts, resumed from iteration {train.get('resumed_from')}")
        if not train.get("resumed_from") or attempts != preempted[2] + 1:
            problems.append(f"{preempted[0].name} did not resume from its checkpoint after the preemption")
    runs = sum(1 for name in args.grids for _ in (out / "runs" / name).glob("*/status.json"))
    _say(f"{len(args.grids)} grids, {runs} runs: " + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items())
         + f"; total {time.time() - started:.0f} s")
    for problem in problems:
        _say(f"PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
