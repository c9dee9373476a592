"""``python -m benchmark.check_model NAME [--import my_model.py]``: does a model give the harness what
it relies on? The checks the test suite runs on every registered family (``tests/zoo/test_registry.py``
runs this module's ``run_checks``), on one model, with a short report of its size.

    python -m benchmark.check_model NAME                     # a built-in model
    python -m benchmark.check_model my_net --import my_model.py --size 64

The checks run on the tiny preset ``NAME_tiny`` (the one smoke grids train), or on NAME itself
when NAME is a tiny preset or has none; the report gives NAME's parameters and MACs. Exit status:
0 when every check passes, 1 when one fails (each failure says what was expected), 2 for an
unknown model or a failed import.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import sys
from typing import Callable

import torch
import torch.nn as nn

import models

from benchmark.measure import costs
from benchmark.base.arguments import add_import_option, import_or_exit
from benchmark.results.paper import paper_numbers

ODD_SIZES = ((13, 17), (9, 8))           # odd, non-square, smaller than most window sizes
TRAIN_STEPS, TRAIN_LR = 20, 1e-3
MACS_SIDE = 32


class CheckFailed(Exception):
    """A check's reason for failing: what the model did, and what the harness expects."""


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def _batch(model: nn.Module, size=(13, 17), batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, model.in_chans, *size, generator=generator)


def _image_batch_out(x: torch.Tensor, y, what: str) -> None:
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise CheckFailed(f"{what}: a {tuple(x.shape)} batch gave {shape}; expected the restored batch of the "
                          "same shape")
    if not torch.isfinite(y).all():
        raise CheckFailed(f"{what}: a {tuple(x.shape)} batch gave non-finite values")


def check_contract(model: nn.Module) -> str:
    if not isinstance(model, models.RestorationModel):
        raise CheckFailed(f"{type(model).__name__} is not a models.RestorationModel; subclass it (forward(x, "
                          "task=None), deploy(), auxiliary_loss(lq), in_chans)")
    parameters = list(inspect.signature(model.forward).parameters.values())
    if [p.name for p in parameters[:2]] != ["x", "task"] or parameters[1].default is not None:
        raise CheckFailed(f"forward{inspect.signature(model.forward)}: expected forward(x, task=None)")
    if not isinstance(model.in_chans, int) or model.in_chans < 1:
        raise CheckFailed(f"in_chans = {model.in_chans!r}: expected the number of image channels (an int >= 1)")
    if model.takes_regions and "regions" not in inspect.signature(model.forward).parameters:
        raise CheckFailed("takes_regions is set but forward has no regions= parameter for the region masks")
    return (f"{type(model).__name__}: forward(x, task=None{', regions=None' if model.takes_regions else ''}), "
            f"{model.in_chans} channel(s)")


def check_odd_sizes(model: nn.Module) -> str:
    for mode in ("train", "eval"):
        model.train(mode == "train")
        for size in ODD_SIZES:
            x = _batch(model, size)
            with torch.no_grad():
                _image_batch_out(x, model(x), f"{mode} mode")
    return ", ".join(f"{h}x{w}" for h, w in ODD_SIZES) + " in train and eval mode: same shape, finite"


def check_input_rules(model: nn.Module) -> str:
    """What ``models.check_image`` enforces: (B, in_chans, H, W) of the model's dtype, else a ValueError."""
    model.eval()
    channels = model.in_chans
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    wrong_dtype = torch.float64 if dtype != torch.float64 else torch.float32
    cases = {f"{channels + 1} channels": torch.rand(1, channels + 1, 16, 16), "a 3-D tensor": torch.rand(channels, 16, 16),
             f"{wrong_dtype} input": torch.rand(1, channels, 16, 16, dtype=wrong_dtype)}
    for what, x in cases.items():
        try:
            with torch.no_grad():
                y = model(x)
        except ValueError:
            continue
        except Exception as err:
            raise CheckFailed(f"{what} {tuple(x.shape)} raised {type(err).__name__}: {str(err)[:120]}; expected a "
                              "ValueError that names the expected input (models.check_image does this)") from None
        raise CheckFailed(f"{what} {tuple(x.shape)} was accepted (gave {tuple(y.shape)}); expected a ValueError "
                          "(models.check_image)")
    return "wrong channels, rank and dtype each raise a ValueError"


def check_gradients(model: nn.Module, size=(13, 17)) -> str:
    """One L1 training step plus the model's own ``auxiliary_loss``: a finite gradient for every
    trainable parameter (one without is a weight the optimiser never moves)."""
    model.train()
    model.zero_grad(set_to_none=True)
    x = _batch(model, size)
    y = model(x)
    _image_batch_out(x, y, "training forward")
    loss = (y - x).abs().mean()
    extra = model.auxiliary_loss(x)
    if extra is not None:
        if not (isinstance(extra, torch.Tensor) and extra.ndim == 0 and torch.isfinite(extra)):
            raise CheckFailed(f"auxiliary_loss returned {extra!r}; expected None or a finite scalar tensor")
        loss = loss + extra
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
    if missing:
        raise CheckFailed(f"no finite gradient for {len(missing)} of {len(trainable)} parameter tensors: "
                          f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} (unused by forward? freeze "
                          "them with requires_grad_(False) or remove them)")
    return f"all {len(trainable)} trainable parameter tensors get a finite gradient" + (
        " (with the auxiliary loss)" if extra is not None else "")


def check_task(model: nn.Module) -> str:
    model.eval()
    x = _batch(model)
    with torch.no_grad():
        _image_batch_out(x, model(x, task=torch.tensor([0, 2])), "forward(x, task=tensor([0, 2]))")
    return "forward(x, task=...) accepted"


def check_deploy(model: nn.Module) -> str:
    model.eval()
    x = _batch(model)
    with torch.no_grad():
        before = model(x)
        deployed = model.deploy()
        if deployed is not model:
            raise CheckFailed(f"deploy() returned {type(deployed).__name__}, not the model itself (it works in place)")
        change = (model(x) - before).abs().max().item()
    if not change <= 1e-5 + 1e-4 * before.abs().max().item():
        raise CheckFailed(f"deploy() changed the outputs by up to {change:.3g}; expected the same outputs up to "
                          "float rounding")
    return f"deploy() keeps the outputs (max change {change:.1e})"


def check_trains(model: nn.Module) -> str:
    """``TRAIN_STEPS`` Adam steps on one fixed denoising batch lower its L1 loss (in training mode,
    before and after, so that batch-norm statistics are the batch's): the model can learn at all."""
    generator = torch.Generator().manual_seed(1)
    clean = torch.nn.functional.avg_pool2d(torch.rand(2, model.in_chans, 28, 28, generator=generator), 5, 1)
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=generator)).clamp(0, 1)

    def loss() -> float:
        with torch.no_grad():
            return (model(noisy) - clean).abs().mean().item()

    model.train()
    before = loss()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=TRAIN_LR)
    for _ in range(TRAIN_STEPS):
        optimizer.zero_grad(set_to_none=True)
        step = (model(noisy) - clean).abs().mean()
        extra = model.auxiliary_loss(noisy)
        (step if extra is None else step + 0.01 * extra).backward()
        optimizer.step()
    after = loss()
    if not after < before:
        raise CheckFailed(f"the L1 loss on one fixed batch went {before:.4f} -> {after:.4f} in {TRAIN_STEPS} Adam "
                          f"steps (lr {TRAIN_LR:g}); expected it to fall")
    return f"L1 on one batch {before:.4f} -> {after:.4f} in {TRAIN_STEPS} Adam steps"


def check_macs(model: nn.Module) -> str:
    shape = (1, model.in_chans, MACS_SIDE, MACS_SIDE)
    paper, _ = costs.count_macs(model, shape, "paper")
    full, uncounted = costs.count_macs(model, shape, "full")
    if uncounted:
        raise CheckFailed(f"ops the full MAC count cannot count: {', '.join(uncounted)} (express them with counted "
                          "ops, or give them a handle in benchmark.measure.costs)")
    if not (paper > 0 and full > 0):
        raise CheckFailed(f"counted {paper:g} / {full:g} GMACs (paper / full); expected a positive count")
    return f"{paper * 1e3:.3f} / {full * 1e3:.3f} MMACs at {MACS_SIDE}x{MACS_SIDE} (paper / full), none uncounted"


CHECKS: dict[str, Callable[[nn.Module], str]] = {
    "contract": check_contract, "odd sizes": check_odd_sizes, "input rules": check_input_rules,
    "gradients": check_gradients, "task": check_task, "deploy": check_deploy, "trains": check_trains,
    "macs": check_macs}


def check_metadata(name: str, model: nn.Module) -> str:
    """The registration's declarations hold for the built model: the kernel ops it declares are the
    ones its layers call (the op benchmarks and the GPU check select models by them)."""
    from models.ops import backends
    info = models.model_info(name)
    calls = backends.kernel_ops(model)
    if sorted(info.ops) != calls:
        raise CheckFailed(f"registered with ops={tuple(info.ops)} but its layers call {tuple(calls)}; declare "
                          f"@register_model(ops={tuple(calls)})")
    converter = info.converter
    weights = (f"checkpoint converter {converter.__module__}.{converter.__qualname__}" if converter is not None
               else "no checkpoint converter (checkpoints load in this suite's keys)")
    return f"kernel ops {', '.join(calls) or 'none'}; {weights}"


def checked_preset(name: str) -> str:
    """The preset the checks run on: ``NAME_tiny`` where it exists, else NAME."""
    return name if name.endswith("_tiny") or f"{name}_tiny" not in models.list_models() else f"{name}_tiny"


def run_checks(name: str) -> list[Check]:
    """Every check on a freshly built (seeded) model each; never raises for a failing model."""
    if name not in models.list_models():
        models.create_model(name)                   # raises the registry's "unknown model ... did you mean"
    preset = checked_preset(name)
    has_tiny = preset != name or name.endswith("_tiny")
    results = [Check("tiny preset", has_tiny, f"{preset} is registered" if has_tiny else
                     f"no {name}_tiny is registered; smoke grids train <name>_tiny (register a small preset, about "
                     f"the full one's parameters / {models.TINY_DIVISOR})")]
    checks = {**CHECKS, "metadata": functools.partial(check_metadata, preset)}
    for check, function in checks.items():
        try:
            torch.manual_seed(0)
            model = models.create_model(preset)
            if check != "contract" and not isinstance(model, models.RestorationModel):
                raise CheckFailed("skipped: the model does not follow the contract")
            results.append(Check(check, True, function(model)))
        except CheckFailed as failure:
            results.append(Check(check, False, str(failure)))
        except Exception as err:                     # the model's own code failed: report it, check the rest
            results.append(Check(check, False, f"{type(err).__name__}: {str(err)[:300]}"))
    return results


def report(name: str, side: int) -> str:
    """NAME's origin, parameters and MACs (both conventions) at 1 x in_chans x side x side."""
    model = models.create_model(name)
    source = models.model_source(name)
    origin = "built in" if source is None else f"{source['file'] or source['module']} (sha256 {str(source['sha256'])[:12]})"
    shape = (1, getattr(model, "in_chans", 1), side, side)
    paper, _ = costs.count_macs(model, shape, "paper")
    full, uncounted = costs.count_macs(model, shape, "full")
    line = (f"{name} ({origin}): {costs.count_params(model):.4f} M parameters "
            f"({costs.count_params(model, True):.4f} M deployed); at {side}x{side}: {paper:.4g} GMACs (paper), "
            f"{full:.4g} GMACs (full)" + (f", uncounted: {', '.join(uncounted)}" if uncounted else ""))
    info = models.model_info(name)
    method = info.paper
    rows = [r for r in paper_numbers() if r["method"] == method and r["params_m"] is not None] if method else []
    if rows:
        shape = "x".join(map(str, info.paper_input[2:]))
        line += (f"\n  the paper (Table {rows[0]['table']}, {method}): {rows[0]['params_m']:.4f} M parameters, "
                 f"{rows[0]['flops_g']:.4f} GMACs at {shape}")
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.check_model", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[1:]))
    parser.add_argument("name", help="a registered model (python -c \"import models; print(models.list_models())\"), or yours with --import")
    add_import_option(parser)
    parser.add_argument("--size", type=int, default=128, help="image side for the report's MACs (default: 128)")
    args = parser.parse_args(argv)
    import_or_exit(parser, args.imports)
    if args.name not in models.list_models():
        try:
            models.create_model(args.name)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
        return 2
    results = run_checks(args.name)
    print(f"check_model {args.name} (checks on {checked_preset(args.name)})")
    for result in results:
        print(f"  {'PASS' if result.passed else 'FAIL'}  {result.name:<12} {result.detail}")
    try:
        print(report(args.name, args.size))
    except Exception as err:
        print(f"report: {type(err).__name__}: {err}")
    passed = sum(r.passed for r in results)
    print(f"{passed} of {len(results)} checks passed")
    return 0 if passed == len(results) else 1

