"""Grid expansion (benchmark.harness.grid) and configuration validation (benchmark.harness.config)."""
import copy
from pathlib import Path

import pytest

from benchmark.harness import config as cfg
from benchmark.harness.grid import describe, load_grid

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path, text: str, name: str = "g.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GRID = """
name: demo
table: 8
base:
  task: mri_sr
  model: {name: restore_rwkv}
axes:
  seed: [0, 1]
  zip:
    label: [k=3, k=5]
    model.options.shift_kernel: [3, 5]
exclude:
  - {seed: 1, label: k=3}
"""


def test_cartesian_product_of_axes_with_zip_groups_and_excludes(tmp_path):
    grid = load_grid(write(tmp_path, GRID))
    cells = [(s.label, s.config["seed"], s.config["model"]["options"]["shift_kernel"]) for s in grid.specs]
    assert cells == [("k=3", 0, 3), ("k=5", 0, 5), ("k=5", 1, 5)]
    assert [s.index for s in grid.specs] == [0, 1, 2]
    assert grid.name == "demo" and grid.table == 8 and grid.scale == "smoke"
    first = grid.specs[0].config
    # defaults < scale < base < axes: smoke uses the tiny preset on phantoms
    assert first["model"]["size"] == "tiny" and first["data"]["sources"]["mri_sr"] == "phantom-mri"
    assert first["train"]["betas"] == [0.9, 0.99] and first["train"]["grad_clip"] == 0.5 and first["task"] == "mri_sr"
    assert cfg.resolve("paper")["train"]["betas"] == [0.9, 0.999] and cfg.resolve("paper")["train"]["grad_clip"] is None
    assert cfg.model_name(first) == "restore_rwkv_tiny"


def test_ids_are_stable_and_independent_of_axis_order(tmp_path):
    a = load_grid(write(tmp_path, GRID, "a.yaml"))
    reordered = GRID.replace("  seed: [0, 1]\n", "").replace("exclude:", "  seed: [0, 1]\nexclude:")
    b = load_grid(write(tmp_path, reordered, "b.yaml"))
    assert {s.id for s in a.specs} == {s.id for s in b.specs}
    assert len({s.id for s in a.specs}) == 3
    assert load_grid(write(tmp_path, GRID, "c.yaml")).specs[0].id == a.specs[0].id
    assert a.specs[1].folder_name == f"k5-{a.specs[1].id[:8]}"


def test_scale_and_command_line_overrides(tmp_path):
    path = write(tmp_path, GRID)
    paper = load_grid(path, "paper").specs[0].config
    assert paper["train"]["iters"] == 30000 and paper["train"]["crop"] == 128 and paper["model"]["size"] == "full"
    assert paper["train"]["lr"] == 2e-4 and paper["train"]["val_images"] == 32
    smoke = load_grid(path, "smoke", ["train.iters=7", "data.sources.mri_sr=data/x", "test.images=null"]).specs[0].config
    assert smoke["train"]["iters"] == 7 and smoke["data"]["sources"]["mri_sr"] == "data/x"
    assert smoke["test"]["images"] is None
    assert load_grid(path, "smoke", ["train.iters=7"]).specs[0].id != load_grid(path).specs[0].id


def test_a_grid_sets_its_own_settings_for_one_scale(tmp_path):
    """``scales:`` applies at its scale only, after the scale and before base, axes and --set."""
    text = GRID + "scales:\n  smoke: {train.iters: 3000, train: {lr: 1.0e-3}}\n  paper: {train.iters: 9}\n"
    path = write(tmp_path, text)
    smoke = load_grid(path).specs[0].config
    assert smoke["train"]["iters"] == 3000 and smoke["train"]["lr"] == 1e-3 and smoke["train"]["batch"] == 1
    assert load_grid(path, "paper").specs[0].config["train"]["iters"] == 9
    assert load_grid(path, "smoke", ["train.iters=7"]).specs[0].config["train"]["iters"] == 7
    based = write(tmp_path, text.replace("  model: {name: restore_rwkv}", "  model: {name: restore_rwkv}\n  train: {iters: 5}"),
                  "based.yaml")
    assert load_grid(based).specs[0].config["train"]["iters"] == 5
    assert load_grid(path).specs[0].id != load_grid(write(tmp_path, GRID, "plain.yaml")).specs[0].id


def test_describe_lists_every_run(tmp_path):
    text = describe(load_grid(write(tmp_path, GRID)))
    assert "3 runs" in text and "restore_rwkv_tiny (shift_kernel=3)" in text


@pytest.mark.parametrize("text, message", [
    ("base: {task: mri_sr}\nbogus: 1\n", "unknown key(s) bogus"),
    ("base: {train: {iter: 5}}\n", "unknown key 'train.iter'; expected one of train.iters"),
    ("base: {task: denoise}\n", "task = 'denoise'; expected one of mri_sr, ct_denoise, pet_synthesis, all_in_one"),
    ("base: {train: {iters: -1}}\n", "train.iters must be a positive integer"),
    ("base: {train: {lr: fast}}\n", "train.lr must be a finite number"),
    ("base: {train: {lr: -1}}\n", "train.lr must be > 0; got -1"),
    ("base: {train: {lr: .nan}}\n", "train.lr must be a finite number"),
    ("base: {train: {lr_min: 0.1}}\n", "train.lr_min (0.1) must not exceed train.lr"),
    ("base: {train: {betas: [0.9, 1.5]}}\n", "train.betas must be two numbers in [0, 1)"),
    ("base: {train: {grad_clip: 0}}\n", "train.grad_clip must be a positive number (the largest gradient norm) or null"),
    ("base: {train: {grad_clip: big}}\n", "train.grad_clip must be a positive number (the largest gradient norm) or null"),
    ("base: {train: {min_gain: .inf}}\n", "train.min_gain must be a finite number"),
    ("base: {seed: -1}\n", "seed must be a non-negative integer; got -1"),
    ("base: {data: {sources: {mri_sr: 5}}}\n", "data.sources.mri_sr must be a prepared folder or phantom-<modality>; got 5"),
    ("base: {model: {name: restore_rwkv, options: {reparam: 'no'}}}\n", "option reparam = 'no': expected true or false"),
    ("base: {model: {name: restore_rwkv, options: {shift_kernel: 5.0}}}\n",
     "option shift_kernel = 5.0: expected an integer or null"),
    ("axes: {zip: {label: [a, a], model.options.shift_kernel: [3, 5]}}\n",
     "label 'a' names two different configurations (they differ in model.options)"),
    ("base: {model: {name: restore_rkwv}}\n", "unknown model 'restore_rkwv'"),
    ("base: {model: {name: restore_rwkv, options: {shift: omin}}}\n", "unknown shift 'omin'; expected one of uni, quad, omni"),
    ("base: {model: {name: restore_rwkv, options: {shfit: uni}}}\n", "expected options among"),
    ("axes: {zip: {label: [a, b], seed: [1]}}\n", "must have one length"),
    ("axes: {seed: 3}\n", "axes.seed must be a non-empty list"),
    ("axes: {seed: [0, 1]}\nexclude: [{seed: 0}, {seed: 1}]\n", "the grid has no cells"),
    ("base: {data: {sources: {mri: x}}}\n", "data.sources has unknown task(s) mri"),
    ("axes: {zip: {label: [a, b], seed: [0, 0]}}\n", "resolve to the same run"),
    ("[1, 2]\n", "a grid file is a mapping"),
    ("base: {train: {warmup: -5}}\n", "train.warmup must be a non-negative integer"),
    ("base: {data: {seed: 1.5}}\n", "data.seed must be a non-negative integer"),
    ("name: /tmp/x\n", "name '/tmp/x' is not a plain name"),
    ("name: ../../x\n", "name '../../x' is not a plain name"),
    ("name: a/b\n", "no path separators"),
    ("scales: {huge: {train.iters: 5}}\n", "scales: unknown scale(s) huge; expected paper, smoke"),
    ("scales: {smoke: 5}\n", "'scales' must map a scale name to a mapping"),
    ("scales: {smoke: {train.iter: 5}}\n", "unknown key 'train.iter'"),
    ("reference: k=7\naxes: {zip: {label: [k=3, k=5], model.options.shift_kernel: [3, 5]}}\n",
     "reference 'k=7' is not a row of the grid; expected one of 'k=3', 'k=5'"),
])
def test_bad_grids_name_the_file_the_key_and_the_choices(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(cfg.ConfigError) as err:
        load_grid(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_the_reference_row_defaults_to_the_first(tmp_path):
    grid = load_grid(write(tmp_path, GRID))
    assert grid.reference == "k=3"
    grid = load_grid(write(tmp_path, GRID.replace("table: 8", "table: 8\nreference: k=5\nnote: read me")))
    assert grid.reference == "k=5" and grid.metadata()["note"] == "read me"


def test_bad_overrides_and_scales():
    with pytest.raises(cfg.ConfigError, match="expected key=value"):
        cfg.parse_override("train.iters")
    with pytest.raises(cfg.ConfigError, match="unknown scale 'huge'; expected one of paper, smoke"):
        cfg.resolve("huge")
    assert cfg.parse_override("train.lr=1e-3") == ("train.lr", 1e-3)


@pytest.mark.parametrize("path", sorted((ROOT / "benchmark" / "grids").glob("*.yaml")), ids=lambda p: p.stem)
@pytest.mark.parametrize("scale", ["smoke", "paper"])
def test_every_shipped_grid_expands(path, scale):
    grid = load_grid(path, scale)
    assert grid.reference in {s.label for s in grid.specs} and grid.metadata()["reference"] == grid.reference
    assert grid.name == path.stem and grid.table in range(1, 9)
    assert len({s.id for s in grid.specs}) == len(grid.specs) >= 3


def test_options_set_one_by_one_keep_the_others_and_a_whole_mapping_replaces_them(tmp_path):
    text = "base: {model: {name: restore_rwkv, options: {shift: omni, shift_kernel: 3}}}\n"
    path = write(tmp_path, text)
    options = lambda grid: grid.specs[0].config["model"]["options"]            # noqa: E731
    assert options(load_grid(path, overrides=["model.options.reparam=false"])) == \
        {"shift": "omni", "shift_kernel": 3, "reparam": False}
    assert options(load_grid(path, overrides=["model.options={shift: quad}"])) == {"shift": "quad"}
    axes = write(tmp_path, text + "axes: {model.options.shift_kernel: [5, 7]}\n")
    assert [s.config["model"]["options"] for s in load_grid(axes).specs] == \
        [{"shift": "omni", "shift_kernel": k} for k in (5, 7)]


def test_a_label_shared_by_seeds_of_one_configuration_is_one_row(tmp_path):
    grid = load_grid(write(tmp_path, "axes: {zip: {label: [a, a], seed: [0, 1]}}\n"))
    assert [s.label for s in grid.specs] == ["a", "a"]


# The smoke protocol when the golden ids were made (issue 46 changed it: 1,200 iterations, CT 1,600,
# all-in-one 2,400, validation every 100, CT phantoms at 1/16 of the dose, 3 seeds per table).
GOLDEN_SMOKE = {"ct_denoise": ["train.iters=3200", "train.warmup=640"]}
GOLDEN_SMOKE_COMMON = ["train.iters=800", "train.warmup=160", "train.val_every=200", "data.phantom_ct_dose=0.25"]


def test_run_ids_made_before_the_kernels_section_are_kept():
    """Every run id of the shipped grids at both scales, and of runs that set the moved keys
    (train.wkv_backend, train.scan_backend, now kernels.wkv / kernels.scan) and train.precision,
    as computed by the code before the kernels: section (commit 9e0de5a, tests/harness/golden/ids.json):
    a stored run is found again and never reruns because of its id. Smoke grids are expanded with
    the smoke protocol of that time (``GOLDEN_SMOKE``): a changed protocol is new runs, a changed id
    function is not; cells of seeds a grid no longer runs are not compared."""
    import json
    import warnings
    from pathlib import Path
    before = json.loads((Path(__file__).parent / "golden" / "ids.json").read_text())
    now = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for path in sorted((Path(__file__).parents[2] / "benchmark" / "grids").glob("*.yaml")):
            for scale in ("smoke", "paper"):
                overrides = [] if scale == "paper" else GOLDEN_SMOKE_COMMON + GOLDEN_SMOKE.get(path.stem, [])
                grid = load_grid(path, scale, overrides)
                now[f"{path.stem}/{scale}"] = {f"{s.label} | seed {s.config['seed']} | {s.candidate}": s.id
                                               for s in grid.specs}
        grid = load_grid("token_shift", "smoke", GOLDEN_SMOKE_COMMON +
                         ["train.precision=bf16", "train.scan_backend=torch", "train.wkv_backend=cpp"])
    now["token_shift/smoke bf16 torch-scan cpp-wkv"] = {f"{s.label} | seed {s.config['seed']} | {s.candidate}": s.id
                                                        for s in grid.specs}
    assert now.keys() == before.keys()
    compared = 0
    for key, ids in before.items():
        common = ids.keys() & now[key].keys()
        assert {k: ids[k] for k in common} == {k: now[key][k] for k in common}, key
        compared += len(common)
    assert compared >= 250          # of 324: the cells of seeds 3-4 (Tables 5-7) are no longer run


def test_the_moved_kernel_keys_still_work_with_a_warning_and_new_keys_at_their_default_keep_ids():
    from benchmark.harness import config as cfg
    from benchmark.harness.grid import spec_id
    with pytest.warns(FutureWarning, match="train.wkv_backend is now kernels.wkv"):
        old = cfg.resolve("smoke", cfg.nest({"train.wkv_backend": "torch"}))
    new = cfg.resolve("smoke", cfg.nest({"kernels.wkv": "torch"}))
    assert old == new and old["kernels"]["wkv"] == "torch" and "wkv_backend" not in old["train"]
    assert spec_id(old) == spec_id(new)
    config = cfg.resolve("smoke")
    saved = copy.deepcopy(cfg.DEFAULTS)
    try:                                                   # a key added later, at its default: same id
        cfg.DEFAULTS["train"]["future_knob"] = 1.0
        grown = cfg.resolve("smoke")
        assert spec_id(grown) == spec_id(config)
        grown["train"]["future_knob"] = 2.0                # set away from its default: a new id
        assert spec_id(grown) != spec_id(config)
    finally:
        cfg.DEFAULTS.clear()
        cfg.DEFAULTS.update(saved)
