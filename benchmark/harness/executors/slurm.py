"""SLURM execution through submitit: a grid's pending specs go out as job arrays.

- Each array task receives one ``RunSpec`` (small, picklable) and the grid folder, and calls the
  same ``run_spec`` as a local run; the job is checkpointable: on preemption or time-out
  (submitit's USR2 signal) it is requeued and resumes from the run's own checkpoint.
- Arrays longer than the cluster's ``MaxArraySize`` are split; ``array_parallelism`` caps how many
  tasks of an array run at once.
- Every submission gets a fresh submitit folder (``<grid>/submitit/<time>-<random>/``: job ids can
  repeat after a cluster restart); each run folder records its job in ``slurm.json``.
- Waiting polls ``sacct`` (accounting is required: without it a job that dies hard is invisible).
  A job that ends without a result is recorded as failed once ``sacct`` has shown it ended for
  ``grace_s`` seconds (sacct lags completion by a few seconds); a job that ``sacct`` never knows is
  failed after ``lost_s``. Nothing is waited on forever.
- A run is not submitted again while its earlier job is queued or running, nor in the first
  ``LOST_S`` after its submission while ``sacct`` does not show it yet; an array task whose run
  another task holds waits for it and then does what is left.
"""
from __future__ import annotations

import functools
import datetime
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import yaml

from benchmark.results import store
from benchmark.results.store import OUTCOMES, RunState
from benchmark.base.yamlfile import load_yaml

if TYPE_CHECKING:                   # benchmark.status reads SLURM states without the grids, torch or the models
    from benchmark.harness.grid import RunSpec

# sacct states after which a job will not run again (REQUEUED, PENDING, RUNNING, ... are not)
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
            "DEADLINE", "PREEMPTED", "REVOKED")
LOST_S = 120.0                      # a submitted job sacct has not shown after this long is lost
SHIPPED = Path(__file__).resolve().parents[2] / "clusters"   # the profiles shipped as package data
BUSY_POLL_S = 5.0                   # how often an array task retries a run another process holds
PROFILE_KEYS = {"partition": None, "account": None, "qos": None, "gpus_per_task": None, "cpus_per_task": 1,
                "mem_gb": None, "time_min": 60, "array_parallelism": 16, "max_array_size": None,
                "signal_delay_s": 90, "max_requeues": 3, "setup": [], "extra": {}}


class SlurmError(RuntimeError):
    """SLURM is unreachable, a profile is wrong, or a submission failed."""


def load_profile(name_or_path: str) -> dict:
    """A cluster profile: a path, your own ``slurm/<name>.yaml`` in the working directory, or one
    shipped with the package (``benchmark/clusters/<name>.yaml``: ``dev``, ``example-gpu``); unknown
    keys are errors."""
    candidates = [Path(name_or_path), Path("slurm") / f"{name_or_path}.yaml", SHIPPED / f"{name_or_path}.yaml"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        known = sorted(p.stem for p in SHIPPED.glob("*.yaml"))
        raise SlurmError(f"no cluster profile {name_or_path!r} (looked for {', '.join(map(str, candidates[1:]))}); "
                         f"shipped profiles: {', '.join(known) or 'none'}")
    try:
        data = load_yaml(path.read_text()) or {}     # the grids' loader: 1e-3 is a number (YAML 1.2)
    except yaml.YAMLError as err:
        raise SlurmError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise SlurmError(f"{path}: a cluster profile is a mapping of {', '.join(PROFILE_KEYS)}")
    unknown = set(data) - set(PROFILE_KEYS)
    if unknown:
        raise SlurmError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; expected {', '.join(PROFILE_KEYS)}")
    for key, value in data.items():
        problem = _profile_problem(key, value)
        if problem:
            raise SlurmError(f"{path}: {key} = {value!r}: {problem}")
    return {**PROFILE_KEYS, **data, "file": str(path)}


@functools.lru_cache(maxsize=1)
def profile_schema() -> dict:
    """What each profile key may hold (``models.schema``; None: the default of the optional ones).
    Built on first use: ``benchmark.status`` reads SLURM states without loading torch and the models."""
    from models.schema import Range, Says
    positive = Annotated[int, Range(min=1)]
    return {
        "partition": Annotated[str | None, Says("a partition name")],
        "account": Annotated[str | None, Says("an account name")],
        "qos": Annotated[str | None, Says("a QOS name")],
        "gpus_per_task": positive | None,
        "cpus_per_task": positive,
        "mem_gb": Annotated[float | None, Range(above=0), Says("a number of GB > 0")],
        "time_min": Annotated[int, Range(min=1), Says("a positive number of minutes")],
        "array_parallelism": positive,
        "max_array_size": positive | None,
        "signal_delay_s": Annotated[int, Range(min=0), Says("a non-negative number of seconds")],
        "max_requeues": Annotated[int, Range(min=0)],
        "setup": Annotated[list[str], Says('a list of shell lines, e.g. ["source .venv/bin/activate"] (a single '
                                          "string would be read as one line per character)")],
        "extra": Annotated[dict[str, str | int | float], Says("a mapping of sbatch option names to strings or numbers")],
    }


def _profile_problem(key: str, value) -> str | None:
    """What is wrong with a profile value (None if nothing): its type, or a line break, which would
    end an ``#SBATCH`` line early and make sbatch ignore every directive after it."""
    from models.schema import problem
    wrong = problem(value, profile_schema()[key])
    if wrong is not None:
        return f"expected {wrong}"
    texts = value if isinstance(value, list) else [*value, *value.values()] if isinstance(value, dict) else [value]
    if any(isinstance(t, str) and ("\n" in t or "\r" in t) for t in texts):
        return "a line break inside a value would end the #SBATCH line (sbatch then ignores the directives after it)"
    return None


def _command(args: list[str], timeout: float = 30) -> str:
    if shutil.which(args[0]) is None:
        raise SlurmError(f"{args[0]} is not on PATH: SLURM's client commands are needed for --executor slurm")
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise SlurmError(f"{' '.join(args)} failed: {out.stderr.strip() or out.stdout.strip()}")
    return out.stdout


def max_array_size() -> int:
    """The cluster's MaxArraySize (array indices run from 0 to MaxArraySize - 1)."""
    for line in _command(["scontrol", "show", "config"]).splitlines():
        if line.strip().startswith("MaxArraySize"):
            return int(line.split("=", 1)[1])
    return 1001                                                        # SLURM's default


def job_states(job_ids: list[str]) -> dict[str, str]:
    """{job id: sacct state} for array tasks (``123_4``) and plain jobs; unknown ids are absent."""
    if not job_ids:
        return {}
    wanted = set(job_ids)
    out = _command(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(sorted({j.split("_")[0] for j in job_ids}))])
    states, pending = {}, {}
    for line in out.splitlines():
        record, _, state = line.partition("|")
        state = state.split()[0] if state else "UNKNOWN"                     # "CANCELLED by 0" -> CANCELLED
        for job in array_tasks(record):
            if job in wanted:
                (pending if "[" in record else states)[job] = state
    return {**pending, **states}                  # a task's own record, once it has one, over its array's


def array_tasks(record: str) -> list[str]:
    """The job ids a sacct record stands for: itself, or for the record of an array's tasks that have
    not started (``123_[0-2,5%2]``: sacct lists them as one line until each starts) each task's id."""
    base, bracket, ranges = record.partition("_[")
    if not bracket:
        return [record]
    tasks = []
    for part in ranges.rstrip("]").split("%")[0].split(","):
        first, _, last = part.partition("-")
        last, _, step = last.partition(":")
        tasks += [f"{base}_{i}" for i in range(int(first), int(last or first) + 1, int(step or 1))]
    return tasks


def is_terminal(state: str | None) -> bool:
    return state is not None and state.split()[0] in TERMINAL


class SpecJob:
    """What an array task runs: one spec, in the grid folder, its ``stages`` (``"train"`` for a tuned
    grid's candidates, to the iteration ``until`` holds for its id: a rung of successive halving).
    Checkpointable: submitit calls ``checkpoint`` on preemption or time-out and requeues the job,
    which then resumes the run from its own checkpoint (the submitted arguments are all it needs)."""

    def __init__(self, stages: str = "all", until: dict[str, int] | None = None):
        self.stages = stages
        self.until = dict(until or {})

    def __call__(self, spec: RunSpec, grid_dir: str) -> dict:
        import torch

        from benchmark.harness.pipeline import run_spec                        # here: torch and the models only in the job
        cpus = os.environ.get("SLURM_CPUS_PER_TASK")
        if cpus:
            torch.set_num_threads(int(cpus))
        return run_until_free(lambda: run_spec(spec, grid_dir, progress=False, stages=self.stages,
                                               until=self.until.get(spec.id)))

    def checkpoint(self, spec: RunSpec, grid_dir: str):
        import submitit
        return submitit.helpers.DelayedSubmission(SpecJob(self.stages, self.until), spec, grid_dir)


def run_until_free(attempt, poll_s: float = BUSY_POLL_S) -> dict:
    """``attempt()`` again while it answers ``busy``: an array task whose run is held by another live
    process (an earlier submission's task still running it) waits for that process to finish, then
    does what is left (a test after another task's training), instead of ending with no outcome.
    The lock is the kernel's, so a holder that dies releases it; the job's time limit bounds the wait."""
    told = False
    while True:
        result = attempt()
        if result.get("state") != RunState.BUSY:
            return result
        if not told:
            print(f"{result.get('reason', 'the run is busy')}; waiting for it", file=sys.stderr, flush=True)
            told = True
        time.sleep(poll_s)


def _executor(folder: Path, profile: dict):
    import submitit
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=profile["max_requeues"])
    parameters = {"job_name": "medir-bench", "time": profile["time_min"], "cpus_per_task": profile["cpus_per_task"],
                  "array_parallelism": profile["array_parallelism"], "signal_delay_s": profile["signal_delay_s"],
                  "setup": list(profile["setup"]), "additional_parameters": dict(profile["extra"])}
    for key in ("partition", "account", "qos", "gpus_per_task"):
        if profile[key] is not None:
            parameters[key] = profile[key]
    if profile["mem_gb"] is not None:
        parameters["mem"] = f"{profile['mem_gb']}G"
    executor.update_parameters(**parameters)
    return executor


def active_job(folder: Path) -> str | None:
    """The job id of a run's earlier submission if SLURM still has it queued or running."""
    try:
        record = store.read_json(folder / "slurm.json")
    except store.StoreError as err:                    # unreadable: treat the run as never submitted
        print(f"{err}; submitting the run afresh", file=sys.stderr, flush=True)
        return None
    if not record:
        return None
    if store.run_state(folder)["state"] in OUTCOMES \
            and not store.is_live(folder):
        return None                # its job's work is over, whatever sacct says yet (it lags completion)
    state = job_states([record["job_id"]]).get(record["job_id"])
    if state is None:              # sacct lags a fresh submission by seconds: unknown but recent is queued
        return record["job_id"] if time.time() - record.get("submitted", 0) < LOST_S else None
    return record["job_id"] if not is_terminal(state) else None


def submit(specs: list[RunSpec], grid_dir, profile: dict, stages: str = "all",
           until: dict[str, int] | None = None) -> dict[str, str]:
    """Submit the specs as job arrays (split at MaxArraySize); returns {spec id: job id}."""
    grid_dir = Path(grid_dir).resolve()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = grid_dir / "submitit" / f"{stamp}-{uuid.uuid4().hex[:6]}"
    executor = _executor(folder, profile)
    size = profile["max_array_size"] or max_array_size()
    jobs = {}
    for start in range(0, len(specs), size):
        chunk = specs[start:start + size]
        submitted = executor.map_array(SpecJob(stages, {s.id: until[s.id] for s in chunk if s.id in (until or {})}),
                                       chunk, [str(grid_dir)] * len(chunk))
        for spec, job in zip(chunk, submitted):
            jobs[spec.id] = job.job_id
            store.write_json(grid_dir / spec.folder_name / "slurm.json", {
                "job_id": job.job_id, "submitit_folder": str(folder), "submitted": time.time(),
                "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr), "profile": profile["file"]})
            previous = store.run_state(grid_dir / spec.folder_name)            # an old RunState.FAILED must not count
            store.write_json(grid_dir / spec.folder_name / "status.json", {
                "state": RunState.SUBMITTED, "id": spec.id, "label": spec.label, "job_id": job.job_id,
                "attempts": previous.get("attempts", 0)})
    return jobs


def _record(folder: Path) -> dict:
    """The run's ``slurm.json`` ({} when missing or unreadable)."""
    try:
        return store.read_json(folder / "slurm.json") or {}
    except store.StoreError:
        return {}


def _last_line(path: str) -> str:
    """The last non-empty line of a job's log (e.g. "srun: error: node: task 0: Killed": the kernel's
    out-of-memory killer), '' when there is none."""
    try:
        lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines()[-20:] if line.strip()]
    except OSError:
        return ""
    killed = [line for line in lines if line.endswith("Killed")]
    text = (killed or lines or [""])[-1]
    return text + (" (out of memory?)" if killed else "")


def wait(specs: list[RunSpec], grid_dir, poll_s: float = 2.0, grace_s: float = 10.0, lost_s: float = LOST_S,
         report=None) -> dict[str, dict]:
    """Poll until every spec's job has ended; a job that ended without recording an outcome in the
    store becomes a failed run naming the job, its state and its log."""
    grid_dir = Path(grid_dir).resolve()
    pending = {s.id: s for s in specs}
    first_seen_ended, started = {}, time.time()
    results = {}
    while pending:
        records = {key: _record(grid_dir / s.folder_name) for key, s in pending.items()}
        states = job_states([r["job_id"] for r in records.values() if r])
        for key, spec in list(pending.items()):
            folder = grid_dir / spec.folder_name
            status, record = store.run_state(folder), records[key]
            job = record.get("job_id")
            state = states.get(job)
            outcome = status["state"] in OUTCOMES
            if outcome and (state is None or is_terminal(state)):
                results[key] = status
            elif is_terminal(state):
                first_seen_ended.setdefault(key, time.time())
                if time.time() - first_seen_ended[key] < grace_s:
                    continue
                last = _last_line(record.get("stderr", ""))
                results[key] = {**status, "state": RunState.FAILED, "slurm_state": state, "log": record.get("stderr", ""),
                                "reason": f"SLURM job {job} ended {state} without a result"
                                          + (f"; its log ends: {last}" if last else "")}
                store.write_json(folder / "status.json", results[key])
            elif state is None and time.time() - max(record.get("submitted", started), started) > lost_s:
                results[key] = {**status, "state": RunState.FAILED, "log": record.get("stderr", ""),
                                "reason": f"SLURM job {job} is unknown to sacct after {lost_s:.0f} s"}
                store.write_json(folder / "status.json", results[key])
            else:
                continue
            del pending[key]
            if report:
                report(spec, results[key])
        if pending:
            time.sleep(poll_s)
    return results


def run_slurm(specs: list[RunSpec], grid_dir, profile: dict, wait_for_results: bool = True, report=None,
              stages: str = "all", until: dict[str, int] | None = None, **wait_options) -> dict[str, dict]:
    """Submit what is not already queued or running, then (optionally) wait for all of it."""
    grid_dir = Path(grid_dir).resolve()
    queued = {s.id: active_job(grid_dir / s.folder_name) for s in specs}
    fresh = [s for s in specs if queued[s.id] is None]
    if len(fresh) < len(specs):
        print(f"{len(specs) - len(fresh)} runs are still queued or running from an earlier submission; "
              "not resubmitted", file=sys.stderr, flush=True)
    if fresh:
        jobs = submit(fresh, grid_dir, profile, stages, until)
        print(f"submitted {len(fresh)} runs as job array(s) {', '.join(sorted({j.split('_')[0] for j in jobs.values()}))}",
              file=sys.stderr, flush=True)
    if not wait_for_results:
        return {s.id: {"state": RunState.SUBMITTED} for s in specs}
    return wait(specs, grid_dir, report=report, **wait_options)
