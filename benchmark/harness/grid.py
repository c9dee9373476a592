"""YAML grids -> frozen run specs with stable ids. Pure: nothing is trained here.

A grid file (the built-in ones: ``benchmark/grids/``, found by name)::

    name: token_shift            # default: the file's stem
    imports: [my_model.py]       # model modules outside the package (.py paths relative to this
                                 # file, or module names), imported before the grid is checked
    table: 8                     # the paper's table the grid reproduces (for rendering)
    title: Omni-Shift kernel size and re-parameterization
    reference: k=5               # the row every other is compared with (default: the first row)
    note: ...                    # printed under the table's title (what a reader must know)
    scales:                      # settings of one scale for this grid only (applied after the scale,
      smoke: {train.iters: 3000} # before base): e.g. a longer smoke budget for slow-learning baselines
    base:                        # a partial run configuration (keys of benchmark.harness.config.DEFAULTS)
      task: mri_sr
      model: {name: restore_rwkv}
    axes:                        # every key a list of values: the cartesian product ...
      seed: [0]
      zip:                       # ... except zip groups, whose lists advance together
        label: [k=3, k=5]        # label: the row name in the table (the paper's method name)
        model.options.shift_kernel: [3, 5]
    exclude:                     # cells matching every key of one entry are dropped
      - {seed: 1, label: k=3}
    tune:                        # candidate values, the same for every row, trained by successive
      train.lr: [4e-3, 1e-3]     # halving on validation with one more beyond an edge (harness.tuning);
                                 # only the chosen candidate is tested (one scale only:
                                 # tune: {smoke: {train.lr: [...]}})
    tune_seeds: 1                # candidates compared on the row's first seed(s) only, the chosen one
                                 # then trained on the others (default: every seed of the row)

A spec's ``id`` is a hash of its resolved configuration's identity (``spec_id``: the keys ids have
always hashed, and any later key only where it differs from its default; the grid's metadata
excluded), so a run's folder is found again whatever the order of the grid and however many keys
the configuration gains; its ``slug`` is the label (or the axis
values) made safe for a folder name. A model registered outside the package adds
``model.source`` (its module, file and source hash) to the configuration: editing the file gives
its cells new ids, and the worker that runs a cell imports it again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from pathlib import Path

import yaml

from benchmark.harness import config as cfg
from benchmark.base.yamlfile import load_yaml

GRID_KEYS = ("name", "imports", "table", "title", "reference", "note", "scales", "base", "axes", "exclude", "tune", "tune_seeds")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One cell of a grid: small and picklable (a SLURM job receives this, never a model)."""
    id: str
    slug: str
    label: str
    index: int                  # position in the grid (table row order)
    config_json: str            # the resolved configuration, canonical JSON
    candidate: str = ""         # a tuned grid's candidate values, e.g. "train.lr=0.004" ("" untuned)

    @property
    def config(self) -> dict:
        return json.loads(self.config_json)

    @property
    def folder_name(self) -> str:
        return f"{self.slug}-{self.id[:8]}"


@dataclasses.dataclass(frozen=True)
class Grid:
    name: str
    table: int | None
    title: str
    file: str
    scale: str
    specs: tuple[RunSpec, ...]
    reference: str
    note: str = ""
    tune: tuple[tuple[str, tuple], ...] = ()     # (dotted key, candidate values) of a tuned grid
    tune_seeds: int | None = None                # seeds per row the candidates are compared on (None: all)

    def metadata(self) -> dict:
        runs = [{"id": s.id, "folder": s.folder_name, "label": s.label, "index": s.index,
                 **({"candidate": s.candidate} if s.candidate else {})} for s in self.specs]
        return {"name": self.name, "table": self.table, "title": self.title, "reference": self.reference,
                "note": self.note, "file": self.file, "scale": self.scale, "runs": runs,
                **({"tune": {key: list(values) for key, values in self.tune}} if self.tune else {}),
                **({"tune_seeds": self.tune_seeds} if self.tune and self.tune_seeds else {})}


# The keys every run id has hashed since ids began, at their place then (``ID_PLACE``): every key
# added since counts only when it differs from its default, so adding a key never changes the id of
# a stored run (``tests/harness/golden/ids.json`` holds ids made before the kernels: section).
ID_KEYS = frozenset({
    "task", "seed", "device", "model.name", "model.size", "model.options", "data.sources", "data.phantom_size",
    "data.seed", "train.iters", "train.batch", "train.crop", "train.lr", "train.lr_min", "train.warmup",
    "train.betas", "train.loss", "train.aux_weight", "train.val_every", "train.val_images", "train.checkpoint_every",
    "train.grad_clip", "train.min_gain", "train.wkv_backend", "test.images", "profile.size",
    "profile.latency_repeat", "erf.images", "erf.size"})
ID_PLACE = {new: old for old, new in cfg.RENAMED.items()}          # kernels.wkv was train.wkv_backend


def spec_id(config: dict) -> str:
    """A hash of the configuration's identity: the ``ID_KEYS`` always, any other leaf where it
    differs from ``DEFAULTS``."""
    defaults = dict(cfg.leaves(cfg.DEFAULTS))
    identity = {}
    for key, value in cfg.leaves(config):
        place = ID_PLACE.get(key, key)
        if place in ID_KEYS or key not in defaults or value != defaults[key]:
            identity[place] = value
    return hashlib.sha256(json.dumps(cfg.nest(identity), sort_keys=True).encode()).hexdigest()[:16]


def _slug(text: str) -> str:
    text = text.replace("=", "").replace("w/o", "no")
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "run"


def _axis_cells(axes: dict, where: str) -> list[dict]:
    """The cartesian product of the plain axes and the zip groups, as dicts of dotted keys."""
    if not isinstance(axes, dict):
        raise cfg.ConfigError(f"{where}: 'axes' must be a mapping of key -> list of values")
    factors = []
    for key, values in axes.items():
        if key == "zip":
            groups = values if isinstance(values, list) else [values]
            for group in groups:
                if not isinstance(group, dict) or not group:
                    raise cfg.ConfigError(f"{where}: axes.zip must be a mapping of key -> list (or a list of them)")
                lengths = {k: len(v) if isinstance(v, list) else None for k, v in group.items()}
                if None in lengths.values() or len(set(lengths.values())) != 1:
                    raise cfg.ConfigError(f"{where}: the lists of a zip group must have one length; got "
                                          + ", ".join(f"{k}: {n}" for k, n in lengths.items()))
                factors.append([dict(zip(group, values)) for values in zip(*group.values())])
        else:
            if not isinstance(values, list) or not values:
                raise cfg.ConfigError(f"{where}: axes.{key} must be a non-empty list of values; got {values!r}")
            factors.append([{key: v} for v in values])
    return [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*factors)]


def _tune_candidates(tune, axes_keys: set[str], command_line: dict, where: str) -> tuple[tuple, list[dict]]:
    """A grid's ``tune:`` as ((key, values), ...) and the list of its candidates (every combination
    of the values, as dotted-key dicts); ((), [{}]) for a grid without one."""
    if tune is None:
        return (), [{}]
    if not isinstance(tune, dict) or not tune:
        raise cfg.ConfigError(f"{where}: 'tune' must be a mapping of key -> list of candidate values, e.g. "
                              "tune: {train.lr: [4e-3, 1e-3]}")
    known = {path for path, _ in cfg.leaves(cfg.DEFAULTS)}
    set_on_command_line = {path for path, _ in cfg.leaves(command_line)}
    for key, values in tune.items():
        if key not in known and not key.startswith("model.options."):
            raise cfg.ConfigError(f"{where}: tune.{key}: unknown key; expected a configuration key such as train.lr")
        if key in axes_keys or key in ("seed", "task", "model.name"):
            raise cfg.ConfigError(f"{where}: tune.{key}: a key that names rows or seeds cannot be tuned (it is an "
                                  "axis of the grid)")
        if key in set_on_command_line:
            raise cfg.ConfigError(f"{where}: tune.{key} is also set by --set; drop one of them")
        if not isinstance(values, list) or len(values) < 2 or len({repr(v) for v in values}) != len(values):
            raise cfg.ConfigError(f"{where}: tune.{key} must be a list of at least two distinct candidate values; "
                                  f"got {values!r}")
    pairs = tuple((key, tuple(tune[key])) for key in sorted(tune))
    return pairs, [dict(zip([k for k, _ in pairs], combo)) for combo in itertools.product(*(v for _, v in pairs))]


def candidate_text(values: dict) -> str:
    """``{"train.lr": 0.004}`` -> ``"train.lr=0.004"`` (the candidate's name in the store and status)."""
    return ", ".join(f"{key}={value}" for key, value in values.items())


def _scale_layer(scales, scale: str, where: str) -> dict:
    """The grid's own settings for ``scale`` (nested or dotted keys), nested; {} if it has none."""
    if not isinstance(scales, dict) or not all(isinstance(v, dict) for v in scales.values()):
        raise cfg.ConfigError(f"{where}: 'scales' must map a scale name to a mapping of settings, "
                              "e.g. scales: {smoke: {train.iters: 3000}}")
    unknown = set(scales) - set(cfg.SCALES)
    if unknown:
        raise cfg.ConfigError(f"{where}: scales: unknown scale(s) {', '.join(sorted(map(str, unknown)))}; "
                              f"expected {', '.join(cfg.SCALES)}")
    layer: dict = {}
    for key, value in (scales.get(scale) or {}).items():
        layer = cfg.merge(layer, cfg.nest({key: value}) if "." in str(key) else {key: value})
    return layer


def _check_model(config: dict, where: str) -> None:
    """The model is registered and takes its options (``models.check_options``)."""
    import models
    name = cfg.model_name(config)
    if name not in models.list_models():
        registered = sorted({n.removesuffix("_tiny") for n in models.list_models()})
        raise cfg.ConfigError(f"{where}: unknown model {config['model']['name']!r} ({name!r} is not registered); "
                              f"expected one of {', '.join(registered)}")
    try:
        models.check_options(name, config["model"]["options"])
    except ValueError as err:
        raise cfg.ConfigError(f"{where}: model.options of {name}: {err}") from None


def _record_source(config: dict) -> None:
    """``model.source`` for a model from outside the package (absent for built-in ones, whose ids
    stay as they were)."""
    import models
    name = cfg.model_name(config)
    if name in models.list_models():
        source = models.model_source(name)
        if source is not None:
            config["model"]["source"] = source


def _check_labels(specs: list[RunSpec], where: str) -> None:
    """Runs that share a label are one table row (averaged over seeds): they may differ in their
    seed only (and, in a tuned grid, in their candidate values: compared per candidate)."""
    first: dict[tuple[str, str], RunSpec] = {}
    for spec in specs:
        key = (spec.label, spec.candidate)
        if key not in first:
            first[key] = spec
            continue
        mine, theirs = (dict(cfg.leaves({**s.config, "seed": None})) for s in (spec, first[key]))
        differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if differ:
            raise cfg.ConfigError(f"{where}: label {spec.label!r} names two different configurations (they differ "
                                  f"in {', '.join(differ[:4])}); runs that share a label may differ only in seed")


def _import_models(path: Path, listed, imports) -> None:
    """The grid's ``imports:`` (relative to its folder), then the command line's ``--import``."""
    import models
    try:
        models.import_models(listed, base=path.parent, via=f"{path}: imports", reload=True)
        models.import_models(list(imports), via="--import", reload=True)
    except models.ModelImportError as err:
        raise cfg.ConfigError(str(err)) from None


BUILT_IN = Path(__file__).resolve().parents[1] / "grids"          # package data: shipped with every install


def built_in_grids() -> dict[str, Path]:
    """The grids of the paper's tables, by name (``benchmark/grids/<name>.yaml``)."""
    return {path.stem: path for path in sorted(BUILT_IN.glob("*.yaml"))}


def locate(grid: str | Path) -> tuple[Path, str]:
    """A grid's file and how runs record it: a path as given; a built-in grid's name (``token_shift``,
    or the path ``ablations/token_shift.yaml`` of earlier versions) as its name."""
    path = Path(grid)
    if path.is_file():
        return path, str(grid)
    name = path.name.removesuffix(".yaml") if path.parent in (Path("."), Path("ablations")) else None
    found = built_in_grids()
    if name in found:
        return found[name], name
    raise cfg.ConfigError(f"{grid}: no such grid file, nor a built-in grid (the built-in grids: "
                          f"{', '.join(found)})")


def load_grid(path, scale: str = "smoke", overrides: list[str] | None = None, check_models: bool = True,
              imports: list[str] | tuple = ()) -> Grid:
    """Read and expand a grid file or built-in grid (``locate``); ``overrides`` are ``key=value``
    strings applied to every cell; ``imports`` are module names or ``.py`` paths (``--import``)
    whose models the grid may name."""
    path, where = locate(path)
    try:
        data = load_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise cfg.ConfigError(f"{where}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise cfg.ConfigError(f"{where}: a grid file is a mapping with keys {', '.join(GRID_KEYS)}")
    unknown = set(data) - set(GRID_KEYS)
    if unknown:
        raise cfg.ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; expected {', '.join(GRID_KEYS)}")
    if data.get("imports") is not None or imports:
        _import_models(path, data.get("imports"), imports)
    command_line = cfg.nest(dict(cfg.parse_override(o) for o in overrides or []))
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise cfg.ConfigError(f"{where}: 'base' must be a mapping")
    scale_layer = _scale_layer(data.get("scales") or {}, scale, where)
    cells = _axis_cells(data.get("axes") or {}, where)
    excludes = data.get("exclude") or []
    if not isinstance(excludes, list) or not all(isinstance(e, dict) for e in excludes):
        raise cfg.ConfigError(f"{where}: 'exclude' must be a list of mappings")
    axes_keys = {k for cell in cells for k in cell}
    tune_of = data.get("tune")
    if isinstance(tune_of, dict) and tune_of and set(tune_of) <= set(cfg.SCALES):    # per scale: tune: {smoke: {...}}
        tune_of, where_tune = tune_of.get(scale), f"{where} (tune.{scale})"
    else:
        where_tune = where
    tune, candidates = _tune_candidates(tune_of, axes_keys, command_line, where_tune)
    specs, seen = [], {}
    for cell in cells:
        if any(all(cell.get(k) == v for k, v in entry.items()) for entry in excludes):
            continue
        label = str(cell.pop("label", "") or "")
        values = cell
        if not label:
            label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in values.items()) or data.get("name", path.stem)
        for candidate in candidates:                     # one, {}, for a grid without tune:
            config = cfg.resolve(scale, scale_layer, base, cfg.nest(values), cfg.nest(candidate), command_line)
            name = candidate_text(candidate)
            cell_where = f"{where} (cell {label!r}" + (f", tune {name})" if name else ")")
            cfg.validate(config, cell_where)
            if check_models:
                _check_model(config, cell_where)
            _record_source(config)
            identity = spec_id(config)
            if identity in seen:
                raise cfg.ConfigError(f"{where}: cells {seen[identity]!r} and {label!r} resolve to the same run")
            seen[identity] = label
            specs.append(RunSpec(identity, _slug(label), label, len(specs), json.dumps(config, sort_keys=True), name))
    if not specs:
        raise cfg.ConfigError(f"{where}: the grid has no cells (every cell excluded?)")
    _check_labels(specs, where)
    table = data.get("table")
    if table is not None and not isinstance(table, int):
        raise cfg.ConfigError(f"{where}: 'table' must be the paper's table number; got {table!r}")
    labels = list(dict.fromkeys(s.label for s in specs))
    reference = data.get("reference", labels[0])
    if reference not in labels:
        raise cfg.ConfigError(f"{where}: reference {reference!r} is not a row of the grid; expected one of "
                              f"{', '.join(map(repr, labels))}")
    name = str(data.get("name") or path.stem)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or ".." in name:
        raise cfg.ConfigError(f"{where}: name {name!r} is not a plain name (it names the store folder and the "
                              "table files): expected letters, digits, '_', '-', '.', no path separators or '..'")
    tune_seeds = data.get("tune_seeds")
    if tune_seeds is not None and (isinstance(tune_seeds, bool) or not isinstance(tune_seeds, int) or tune_seeds < 1):
        raise cfg.ConfigError(f"{where}: 'tune_seeds' must be a positive number of seeds; got {tune_seeds!r}")
    return Grid(name, table, str(data.get("title") or ""), where, scale,
                tuple(specs), str(reference), str(data.get("note") or ""), tune, tune_seeds)


def describe(grid: Grid) -> str:
    """The expanded grid as a readable listing (``--dry-run``)."""
    keys = ", ".join(k for k, _ in grid.tune)
    tuned = "" if not grid.tune else (f" (each row's first {grid.tune_seeds} seed(s) once per candidate of tune: {keys}, "
                                      "the other seeds with the chosen one)") if grid.tune_seeds else \
        f" (every row and seed once per candidate of tune: {keys})"
    lines = [f"grid {grid.name} ({grid.file}), scale {grid.scale}: {len(grid.specs)} runs{tuned}"]
    for spec in grid.specs:
        config = spec.config
        options = ", ".join(f"{k}={v}" for k, v in config["model"]["options"].items()) or "defaults"
        candidate = f", candidate {spec.candidate}" if spec.candidate else ""
        lines.append(f"  {spec.index:>3}  {spec.folder_name:<40} {cfg.model_name(config)} ({options}), "
                     f"task {config['task']}, seed {config['seed']}, {config['train']['iters']} iters{candidate}")
    return "\n".join(lines)


def table_backbones() -> list[str]:
    """The models of the paper's Tables 1-4: every model of the built-in grids of
    those tables, at the paper's size, in grid order."""
    grids = {}
    for path in built_in_grids().values():
        table = load_yaml(path.read_text()).get("table")
        if table in (1, 2, 3, 4):
            grids[table] = path
    names = [cfg.model_name(s.config) for table in sorted(grids)
             for s in load_grid(grids[table], "paper", check_models=False).specs]
    return list(dict.fromkeys(names))
