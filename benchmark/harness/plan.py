"""What a grid will cost before it runs: ``python -m benchmark.run --grid <grid> --scale paper --plan``.

Trains nothing. For every distinct model of the grid (its preset and options) one process measures,
on this machine, a training step at the grid's batch and crop (forward, L1 loss, backward, Adam;
``benchmark.measure.timing``) with its peak memory, a forward of one whole slice at each of the
grid's data sizes (validation and test) and one ERF map (forward and backward of one image). A run's
time is then counted from its configuration (``Workload``):

    train       iters x step
    validation  (iters / val_every) x val_images x one forward at the validation slice size
    test        the test split's slices x one forward at their size (a tuned grid tests only the
                chosen candidate of each row and seed)
    ERF         erf.images x one ERF map

A tuned grid's candidates train by successive halving (``harness.tuning``): the grid's total counts
their training and validation at the share of full training that halving spends at most (its edge
extension included); the longest run, which sets the SLURM time limit, is a candidate trained to the end.

and summed per run and for the grid, in device-hours. Peak memory decides whether a model fits a
GPU of a given memory: the step's resident memory here (weights, gradients, Adam's moments and the
activations, all float32) plus ``CUDA_CONTEXT_MB`` for the CUDA context and workspace, an estimate
until a GPU check measures it. A model out of memory at the grid's batch is measured at halved
batches and its step extrapolated (a line through the two largest that fit; marked ``est.``). With a SLURM profile, the array's tasks (one per run, split by the
profile's ``max_array_size``) and the time limit to ask for: the longest run with ``SAFETY`` to
spare, rounded up to a quarter hour (a run over the profile's limit checkpoints and is requeued:
the plan says how many times).

Test and validation counts come from the prepared data's manifest when the source exists, else
from the paper's splits (``PAPER_SPLITS``: IXI 11,400 test slices of 256x256, the AAPM test patient's
211 of 512x512, PET 2,044 of 192x192). Measured costs are kept in ``<out>/plan-costs.json`` keyed by
the network's signature (``models.network_signature``), the shapes and the machine, so the plans of
several grids measure each network once; a network measured for another task's grid (other slice
sizes) is measured again only for the forwards at the new sizes (its step, memory and ERF map hold),
and every plan counts a network's fastest step measurement (``canonical``: a step measured while
other work ran on the machine is slower, never faster).
"""
from __future__ import annotations

import functools
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmark.base import machine, markdown, processes
from benchmark.base.vocabulary import TASKS
from benchmark.harness import config as cfg

# The paper's splits (Restore-RWKV Sec. 4.1): slices of the validation and test splits, and their side.
PAPER_SPLITS = {"mri_sr": {"val": 5828, "test": 11400, "size": 256},
                "ct_denoise": {"val": 128, "test": 211, "size": 512},
                "pet_synthesis": {"val": 684, "test": 2044, "size": 192}}
CUDA_CONTEXT_MB = 1024          # what a GPU holds beyond the step's tensors (context, cuDNN / cuBLAS workspace)
SLOW_STEP_S = 60.0              # a warm-up step slower than this is followed by one timed step, not ``repeat``
SAFETY = 1.25                   # a SLURM time limit this much above the longest run
QUARTER_HOUR_S = 900


@dataclass(frozen=True)
class Workload:
    """What one run does, in counts (from its resolved configuration and its data)."""
    iters: int
    batch: int
    crop: int
    validations: int                          # iters // val_every
    val_images: int
    test_images: dict[str, int]               # task -> slices tested
    sizes: dict[str, int]                     # task -> slice side
    erf_images: int
    erf_size: int


def _split(source: str, task: str, phantom_size: int) -> dict:
    """{"val", "test", "size"} of a task's data: the manifest of a prepared folder, the phantom counts,
    or the paper's splits when the source is not here."""
    if str(source).startswith("phantom-"):
        from benchmark.data.sources import PHANTOM_COUNTS
        return {"val": PHANTOM_COUNTS[1], "test": PHANTOM_COUNTS[2], "size": phantom_size}
    manifest = Path(source) / "manifest.json"
    if manifest.is_file():
        splits = json.loads(manifest.read_text()).get("splits", {})
        if "val" in splits and "test" in splits and splits["test"].get("shape"):
            return {"val": splits["val"]["count"], "test": splits["test"]["count"],
                    "size": int(splits["test"]["shape"][-1])}
    return dict(PAPER_SPLITS[task])


def workload(config: dict) -> Workload:
    tasks = TASKS[config["task"]]
    splits = {t: _split(config["data"]["sources"][t], t, config["data"]["phantom_size"]) for t in tasks}
    limit = config["test"]["images"]
    train = config["train"]
    return Workload(iters=train["iters"], batch=train["batch"], crop=train["crop"],
                    validations=train["iters"] // train["val_every"],
                    val_images=min(train["val_images"], min(s["val"] for s in splits.values())),
                    test_images={t: min(limit or s["test"], s["test"]) for t, s in splits.items()},
                    sizes={t: s["size"] for t, s in splits.items()},
                    erf_images=config["erf"]["images"], erf_size=config["erf"]["size"])


@functools.lru_cache(maxsize=None)
def _signature(model: str, options: str) -> str:
    import models
    return models.network_signature(models.create_model(model, **json.loads(options)))


def build(config: dict) -> dict:
    """What the measuring process builds: the preset and its options."""
    return {"model": cfg.model_name(config), "options": config["model"]["options"]}


def cost_key(config: dict, load: Workload) -> str:
    """What a measurement depends on: the network (its signature: rows of several grids that build
    one network are measured once), the shapes, the precision, the machine and its threads."""
    import torch
    made = build(config)
    return json.dumps({"network": _signature(made["model"], json.dumps(made["options"], sort_keys=True)),
                       "batch": load.batch, "crop": load.crop, "sizes": sorted(set(load.sizes.values())),
                       "erf_size": load.erf_size, "precision": config["train"].get("precision", "fp32"),
                       "machine": machine.name(), "threads": torch.get_num_threads()}, sort_keys=True)


def _measure_one(key: str, made: dict, repeat: int, queue) -> None:
    """The process body: step time and peak memory, a forward per slice size, one ERF map."""
    try:
        import torch

        import models
        from benchmark.measure import costs, timing
        spec = {**json.loads(key), **made}
        torch.manual_seed(0)
        model = models.create_model(spec["model"], **spec["options"])
        if spec.get("forwards_only"):                         # the step is known from other slice sizes
            queue.put({"forward_s": {str(side): timing.time_calls(timing.inference_call(model, torch.randn(
                1, 1, side, side)), 1, 1)["median_ms"] / 1e3 for side in spec["sizes"]}})
            return
        params_m = costs.count_params(model)
        try:
            costs._reset_peak_rss()
            baseline = costs._rss_mb("VmRSS")
        except OSError:
            baseline = None
        x = torch.randn(spec["batch"], 1, spec["crop"], spec["crop"])
        step_call = timing.training_step(model, x, precision=spec["precision"])
        started = time.perf_counter()
        step_call()                                           # the warm-up (allocations, kernel builds)
        slow = time.perf_counter() - started > SLOW_STEP_S    # minutes per step: one timed step is enough
        step = timing.time_calls(step_call, 1 if slow else repeat, 0)
        peak = costs._rss_mb("VmHWM") - baseline if baseline is not None else None
        forward = {}
        for side in spec["sizes"]:
            image = torch.randn(1, 1, side, side)
            forward[str(side)] = timing.time_calls(timing.inference_call(model, image), 1, 1)["median_ms"] / 1e3
        image = torch.randn(1, 1, spec["erf_size"], spec["erf_size"], requires_grad=True)
        model.eval()

        def erf_map() -> None:
            out = model(image)
            out[..., spec["erf_size"] // 2, spec["erf_size"] // 2].sum().backward()
        erf = timing.time_calls(erf_map, 1, 1)["median_ms"] / 1e3
        queue.put({"step_s": step["median_ms"] / 1e3, "peak_mb": peak, "forward_s": forward, "erf_s": erf,
                   "params_m": params_m, "measured": time.strftime("%Y-%m-%d")})
    except Exception as err:  # reported, not raised: the plan goes on
        queue.put({"error": f"{type(err).__name__}: {err}"})


def measure(key: str, made: dict, repeat: int = 2, worker=None) -> dict:
    """One network's costs (``made``: the preset and options that build it), measured in its own
    process (an out-of-memory stays there): the dict of ``_measure_one`` with ``outcome`` ok, or
    ``oom`` / ``error`` with the message. Out of memory at the grid's batch, the step is measured
    at smaller batches (``smaller``) and extrapolated to the grid's (``estimate``)."""
    result = _measured(key, made, repeat, worker)
    if result["outcome"] == "oom":
        batch = json.loads(key)["batch"]
        result["smaller"] = smaller_batches(key, made, batch, repeat, worker)
        result["estimate"] = extrapolate(result["smaller"], batch)
    return result


def _measured(key: str, made: dict, repeat: int, worker) -> dict:
    result, exitcode = processes.run_isolated(worker or _measure_one, key, made, repeat)
    result = result or {"error": f"the measuring process exited with code {exitcode}"}
    if "error" in result:
        return {**result, "outcome": "oom" if processes.out_of_memory(exitcode, result["error"]) else "error"}
    return {**result, "outcome": "ok"}


def smaller_batches(key: str, made: dict, batch: int, repeat: int = 2, worker=None) -> list[dict]:
    """The step at halved batches until one fits, and the half of that one too (two points for a
    line); each ``{"batch": b, ...}`` with ``outcome`` ok or oom / error."""
    points, fitted = [], 0
    size = batch // 2
    while size >= 1 and fitted < 2:
        point = {"batch": size, **_measured(key, {**made, "batch": size}, repeat, worker)}
        points.append(point)
        if point["outcome"] == "ok":
            fitted += 1
        elif point["outcome"] == "error" or fitted:
            break
        size //= 2
    return points


def extrapolate(points: list[dict], batch: int) -> dict | None:
    """The step time and peak memory at ``batch`` from smaller batches that fit: a line through
    two (weights, gradients and Adam's moments are the intercept, activations grow with the
    batch), or from one, proportional to the batch (an upper bound of the memory). None when none fit."""
    fitted = sorted((p for p in points if p["outcome"] == "ok"), key=lambda p: p["batch"])
    if not fitted:
        return None
    last = fitted[-1]
    if len(fitted) >= 2 and fitted[-1]["peak_mb"] is not None and fitted[-2]["peak_mb"] is not None:
        first = fitted[-2]
        span = last["batch"] - first["batch"]
        step = last["step_s"] + (batch - last["batch"]) * (last["step_s"] - first["step_s"]) / span
        peak = last["peak_mb"] + (batch - last["batch"]) * (last["peak_mb"] - first["peak_mb"]) / span
        how = f"a line through batches {first['batch']} and {last['batch']}"
    else:
        scale = batch / last["batch"]
        step, peak = last["step_s"] * scale, None if last["peak_mb"] is None else last["peak_mb"] * scale
        how = f"batch {last['batch']} x {scale:g} (memory: an upper bound)"
    return {"step_s": step, "peak_mb": peak, "forward_s": last["forward_s"], "erf_s": last["erf_s"],
            "params_m": last["params_m"], "how": how}


def usable(cost: dict) -> dict | None:
    """The costs a run's time is counted from: measured, else extrapolated from smaller batches."""
    return cost if cost.get("outcome") == "ok" else cost.get("estimate")


def run_seconds(load: Workload, cost: dict, tested: bool = True) -> dict | None:
    """Seconds of each stage of one run (None when the model could not be measured); ``tested``:
    whether the run is tested and its ERF computed (a tuned grid's unchosen candidates are not)."""
    cost = usable(cost)
    if cost is None:
        return None
    forward = {int(side): s for side, s in cost["forward_s"].items()}
    val_size = next(iter(load.sizes.values()))                 # validation takes the first task's slices
    out = {"train": load.iters * cost["step_s"],
           "validation": load.validations * load.val_images * forward[val_size],
           "test": sum(n * forward[load.sizes[t]] for t, n in load.test_images.items()) if tested else 0.0,
           "erf": load.erf_images * cost["erf_s"] if tested else 0.0}
    out["total"] = sum(out.values())
    return out


def slurm_advice(longest_s: float, runs: int, profile: dict | None) -> dict:
    """The array's tasks and the time limit to ask for (minutes); with a profile, how many requeues
    its own limit would take for the longest run and whether ``max_requeues`` allows them."""
    limit_min = math.ceil(SAFETY * longest_s / QUARTER_HOUR_S) * QUARTER_HOUR_S // 60
    advice = {"tasks": runs, "time_min": int(limit_min)}
    if profile:
        size = profile.get("max_array_size") or runs
        advice["arrays"] = math.ceil(runs / size) if runs else 0
        own = profile["time_min"] * 60
        advice["requeues"] = max(0, math.ceil(longest_s / own) - 1)
        advice["requeues_allowed"] = advice["requeues"] <= profile["max_requeues"]
    return advice


def plan_grid(grid, costs: dict[str, dict], gpu_memory_gb: list[float], profile: dict | None = None) -> dict:
    """The plan's numbers: per distinct model its cost and memory verdicts, per run its seconds,
    the grid's totals and the SLURM advice. ``costs``: ``cost_key`` -> ``measure`` result."""
    from benchmark.harness import tuning
    tested_pairs = set()
    runs, models = [], {}
    candidates = len({s.candidate for s in grid.specs})
    for spec in grid.specs:
        config = spec.config
        load = workload(config)
        share = 1.0 if not grid.tune else tuning.halving_iterations(
            config["train"]["iters"], config["train"]["val_every"], candidates) / (candidates * config["train"]["iters"])
        key = cost_key(config, load)
        cost = canonical(costs, key)
        pair = (spec.label, config["seed"])
        tested = not grid.tune or pair not in tested_pairs      # one candidate per row and seed is tested
        tested_pairs.add(pair)
        seconds = run_seconds(load, cost, tested)
        runs.append({"label": spec.label, "seed": config["seed"], "candidate": spec.candidate, "key": key,
                     "seconds": seconds, "load": load, "estimated": cost.get("outcome") != "ok" and seconds is not None,
                     "training_share": share})
        entry = models.setdefault(key, {**build(config), "labels": [], "cost": cost, "load": load})
        if spec.label not in entry["labels"]:
            entry["labels"].append(spec.label)
    for entry in models.values():
        peak = (usable(entry["cost"]) or {}).get("peak_mb")
        entry["fits"] = {gb: (None if peak is None else peak + CUDA_CONTEXT_MB <= gb * 1024) for gb in gpu_memory_gb}
    known = [r for r in runs if r["seconds"]]
    longest = max((r["seconds"]["total"] for r in known), default=0.0)
    total = sum(r["seconds"]["total"] - (1 - r["training_share"]) * (r["seconds"]["train"] + r["seconds"]["validation"])
                for r in known)
    return {"runs": runs, "models": list(models.values()), "unknown": sum(r["seconds"] is None for r in runs),
            "estimated": sum(r["estimated"] for r in runs), "training_share": runs[0]["training_share"] if runs else 1.0,
            "total_s": total, "longest_s": longest, "slurm": slurm_advice(longest, len(runs), profile)}


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    return f"{seconds / 3600:,.1f}" if seconds >= 360 else f"{seconds / 3600:.2f}"


def render_plan(grid, plan: dict, gpu_memory_gb: list[float], device: str, command: str) -> str:
    """``tables/<grid>_plan.md``."""
    load = plan["runs"][0]["load"] if plan["runs"] else None
    lines = [f"# Plan: {grid.title or grid.name} at scale `{grid.scale}`", "",
             f"Made by `{command}` on {device}, {time.strftime('%Y-%m-%d')}: nothing trained; each distinct model "
             "measured once (a training step at the grid's batch and crop, a forward per slice size, one ERF map; "
             "`benchmark/harness/plan.py` says how a run's time is counted; a network measured for several grids "
             "counts its fastest step, since other work on the machine only slows a step down).", ""]
    tuned = (f" x {len(dict(grid.tune)[next(iter(dict(grid.tune)))])} tuning candidates, trained by successive halving: "
             f"at most {plan['training_share']:.0%} of training each in full" if grid.tune else "")
    rows_count = len({r["label"] for r in plan["runs"]})
    seeds = len({r["seed"] for r in plan["runs"]})
    lines += [f"**{len(plan['runs'])} runs** ({rows_count} rows x {seeds} seeds{tuned}); **{_hours(plan['total_s'])} "
              f"device-hours** on this device" + (f" for the {len(plan['runs']) - plan['unknown']} runs whose model "
                                                   f"could be measured ({plan['unknown']} unknown)"
                                                   if plan["unknown"] else "") +
              (f"; the longest run {_hours(plan['longest_s'])} h." if plan["unknown"] < len(plan["runs"]) else ".")
              + (f" {plan['estimated']} of the runs are counted from a step extrapolated from smaller batches (their "
                 "model ran out of memory at the grid's batch here; see under the models)." if plan.get("estimated") else ""),
              ""]
    if load:
        tests = ", ".join(f"{t}: {n:,} slices of {load.sizes[t]}x{load.sizes[t]}" for t, n in load.test_images.items())
        lines += [f"Each run: {load.iters:,} iterations of batch {load.batch} on {load.crop}x{load.crop} crops; "
                  f"{load.validations} validations of {load.val_images} slices; test {tests}; ERF over "
                  f"{load.erf_images} images of {load.erf_size}x{load.erf_size}.", ""]
    memory = [f"fits {gb:g} GB" for gb in gpu_memory_gb]
    table, notes = [], []
    for m in plan["models"]:
        cost = m["cost"]
        options = ", ".join(f"{k}={v}" for k, v in sorted(m["options"].items())) or "-"
        counted = usable(cost)
        if counted is None:
            why = (f"out of memory on this machine ({cost['error']})" if cost["outcome"] == "oom"
                   else f"not measured: {cost['error']}")
            table.append([m["model"], options, ", ".join(m["labels"]), why, "-", "-", "-", *["-"] * len(memory)])
            if cost.get("smaller"):
                notes.append(f"- {m['model']} ({', '.join(m['labels'])}): out of memory here at batch "
                             f"{load.batch if load else '?'} and at every smaller batch tried "
                             f"({', '.join(str(p['batch']) for p in cost['smaller'])}).")
            continue
        mark = "" if counted is cost else " (est.)"
        forwards = ", ".join(f"{float(s):.2f} s at {side}²" for side, s in counted["forward_s"].items())
        fits = ["unknown" if f is None else ("yes" if f else "**no**") + mark for f in m["fits"].values()]
        peak = "-" if counted.get("peak_mb") is None else f"{counted['peak_mb'] / 1024:.1f}{mark}"
        table.append([m["model"], options, ", ".join(m["labels"]), f"{counted['step_s']:.2f}{mark}", peak, forwards,
                      f"{counted['erf_s']:.2f}", *fits])
        if mark:
            measured = "; ".join(f"batch {p['batch']}: " + (f"{p['step_s']:.2f} s, {p['peak_mb'] / 1024:.1f} GB"
                                                             if p["outcome"] == "ok" and p["peak_mb"] is not None
                                                             else f"{p['step_s']:.2f} s" if p["outcome"] == "ok"
                                                             else "out of memory") for p in cost["smaller"])
            notes.append(f"- {m['model']} ({', '.join(m['labels'])}): out of memory here at batch "
                         f"{load.batch if load else '?'} ({cost['error']}); measured at {measured}; batch "
                         f"{load.batch if load else '?'} extrapolated as {counted['how']}. To measure it: a machine "
                         f"with more than {counted['peak_mb'] / 1024:.0f} GB free (`--plan` there, or the GPU check).")
    lines += ["## Models", "", markdown.table(["model", "options", "rows", "step (s)", "peak memory (GB)",
                                               "forward per slice", "ERF map (s)", *memory], table, "lll" + "r" * (4 + len(memory))), "",
              f"Fits: the step's peak memory here plus {CUDA_CONTEXT_MB} MB for the CUDA context, against the GPU's "
              "memory: an estimate (float32 weights, gradients, Adam moments and activations, as on a GPU) until "
              "`python -m benchmark.gpu_check` measures the step on one.", ""]
    if notes:
        lines += ["Extrapolated (est.):", "", *notes, ""]
    per_run = [[r["label"], r["seed"], r["candidate"] or "-",
                *(_hours(r["seconds"][k]) if r["seconds"] else "unknown" for k in ("train", "validation", "test", "erf",
                                                                                   "total"))] for r in plan["runs"]]
    lines += ["## Runs (device-hours)", "", markdown.table(["row", "seed", "candidate", "train", "validation", "test",
                                                            "ERF", "total"], per_run, "lrlrrrrr"), ""]
    advice = plan["slurm"]
    text = (f"SLURM: {advice['tasks']} array tasks (one per run); ask for `time_min: {advice['time_min']}` "
            f"(the longest run x {SAFETY:g}, rounded up to a quarter hour).")
    if plan["unknown"] == len(plan["runs"]):
        text = (f"SLURM: {advice['tasks']} array tasks (one per run); no model could be measured here, so no time "
                "limit is suggested: measure on a machine where they fit (`--plan` there).")
    elif "requeues" in advice:
        text += (f" With the profile's own limit the longest run is requeued {advice['requeues']} time(s) "
                 + ("(within its max_requeues)." if advice["requeues_allowed"] else "(more than its max_requeues: "
                    "raise time_min or max_requeues).")
                 + f" The profile splits the grid into {advice['arrays']} array(s).")
    lines += ["## SLURM", "", text, ""]
    return "\n".join(lines)


def load_costs(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}                           # a damaged cache is measured again


def _step_key(key: str) -> str:
    """A cost key without the slice sizes: what the step, its memory and the ERF map depend on."""
    spec = json.loads(key)
    spec.pop("sizes", None)
    return json.dumps(spec, sort_keys=True)


def _same_step(costs: dict, key: str) -> dict[str, dict]:
    """The usable cached measurements of ``key``'s network, batch, crop, ERF size and machine, at
    any slice sizes: their step, peak memory and ERF map hold for ``key`` too."""
    want = _step_key(key)
    return {other: cost for other, cost in costs.items() if _step_key(other) == want and usable(cost) is not None}


def reusable(costs: dict, key: str) -> dict | None:
    """A cached measurement of the same network and shapes at other slice sizes (another task's grid)."""
    return next((cost for other, cost in _same_step(costs, key).items() if other != key), None)


def canonical(costs: dict, key: str) -> dict:
    """``costs[key]`` with the step, peak memory and ERF map of the fastest measurement of the same
    network and shapes at any slice sizes (another process on the machine only slows a step down):
    one network has one step in every plan; its forwards stay its own."""
    own = costs[key]
    same = list(_same_step(costs, key).values())
    if usable(own) is None or not same:
        return own
    best = min(same, key=lambda c: usable(c)["step_s"])
    forwards = usable(own)["forward_s"]
    if best.get("outcome") == "ok":
        return {**best, "forward_s": forwards}
    return {**best, "estimate": {**best["estimate"], "forward_s": forwards}}


def with_forwards(cost: dict, forward_s: dict) -> dict:
    """``cost`` with the forward times of other slice sizes (in its estimate too)."""
    out = {**cost, "forward_s": forward_s, "step_from_other_sizes": True}
    if cost.get("estimate"):
        out["estimate"] = {**cost["estimate"], "forward_s": forward_s}
    return out


def make_plan(grid, out: Path, tables: Path, gpu_memory_gb: list[float], profile: dict | None, command: str,
              repeat: int = 2, worker=None) -> Path:
    """Measure what is not cached yet, then write ``<tables>/<grid>_plan.md``; returns its path."""
    from benchmark.results import store
    cache = Path(out) / "plan-costs.json"
    costs = load_costs(cache)
    keys = {}
    for spec in grid.specs:
        keys.setdefault(cost_key(spec.config, workload(spec.config)), build(spec.config))
    for number, (key, made) in enumerate(keys.items(), start=1):
        if key in costs and not (costs[key]["outcome"] == "oom" and "smaller" not in costs[key]):
            continue                        # cached (an out-of-memory from before smaller batches: again)
        base = reusable(costs, key)
        if base is not None:                     # measured for another task: only the new slice sizes' forwards
            print(f"plan {grid.name}: measuring {number}/{len(keys)}: {made['model']} {made['options'] or ''} "
                  f"(forwards at the new slice sizes; the step measured before)", file=sys.stderr, flush=True)
            forwards = _measured(key, {**made, "forwards_only": True}, repeat, worker)
            if forwards["outcome"] == "ok":
                sizes = {str(side) for side in json.loads(key)["sizes"]}
                costs[key] = with_forwards(base, {side: s for side, s in forwards["forward_s"].items() if side in sizes})
                store.write_json(cache, costs)
                continue
        print(f"plan {grid.name}: measuring {number}/{len(keys)}: {made['model']} {made['options'] or ''}",
              file=sys.stderr, flush=True)
        costs[key] = measure(key, made, repeat, worker)
        store.write_json(cache, costs)
    import torch
    device = f"{machine.name()}, {torch.get_num_threads()} threads"
    text = render_plan(grid, plan_grid(grid, costs, gpu_memory_gb, profile), gpu_memory_gb, device, command)
    path = Path(tables) / f"{grid.name}_plan.md"
    store.write_text(path, text)
    return path
