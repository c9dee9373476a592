"""RAT against an independent float64 reading of its authors' ``Model_RAT.py``: a state dict in the
authors' key layout, written out key by key from their constructor, loads strictly after
``convert_official_state_dict`` and gives the output of a functional forward that reads the
authors' keys and builds the region mask their way (one class at a time, region @ region^T)."""
import pytest
import torch
import torch.nn.functional as F

import models
from benchmark.measure import costs
from models.rat import RAT, convert_official_state_dict, intensity_regions

WIDTH, HEADS, WINDOW = 8, 8, 4                   # heads 8, window 4, MLP ratio 2, 3 layers a block: theirs


def authors_state_dict(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64) * 0.3   # noqa: E731
    state = {"intro.weight": r(WIDTH, 1, 3, 3), "intro.bias": r(WIDTH), "ending.weight": r(1, WIDTH, 3, 3),
             "ending.bias": r(1)}

    def naf(p, c):
        state.update({f"{p}.norm1.weight": 1 + r(c), f"{p}.norm1.bias": r(c), f"{p}.norm2.weight": 1 + r(c),
                      f"{p}.norm2.bias": r(c), f"{p}.conv1.weight": r(2 * c, c, 1, 1), f"{p}.conv1.bias": r(2 * c),
                      f"{p}.conv2.weight": r(2 * c, 1, 3, 3), f"{p}.conv2.bias": r(2 * c),
                      f"{p}.conv3.weight": r(c, c, 1, 1), f"{p}.conv3.bias": r(c), f"{p}.sca.1.weight": r(c, c, 1, 1),
                      f"{p}.sca.1.bias": r(c), f"{p}.conv4.weight": r(2 * c, c, 1, 1), f"{p}.conv4.bias": r(2 * c),
                      f"{p}.conv5.weight": r(c, c, 1, 1), f"{p}.conv5.bias": r(c), f"{p}.beta": r(1, c, 1, 1),
                      f"{p}.gamma": r(1, c, 1, 1)})

    c = WIDTH
    for i in range(2):
        naf(f"encoders.{i}.0", c)
        state[f"downs.{i}.weight"], state[f"downs.{i}.bias"] = r(2 * c, c, 2, 2), r(2 * c)
        c *= 2
    for j in range(3):
        p = f"middle_blks.0.layers.{j}"
        for norm in ("norm_ra", "norm_ra_mlp", "norm_wa", "norm_wa_mlp"):
            state[f"{p}.{norm}.weight"], state[f"{p}.{norm}.bias"] = 1 + r(c), r(c)
        state.update({f"{p}.ra.qkv.weight": r(3 * c, c, 1, 1), f"{p}.ra.qkv.bias": r(3 * c),
                      f"{p}.ra.project_out.weight": r(c, c, 1, 1), f"{p}.ra.project_out.bias": r(c),
                      f"{p}.lambda_ra": r(1, c, 1, 1), f"{p}.wa.qkv.weight": r(3 * c, c), f"{p}.wa.qkv.bias": r(3 * c),
                      f"{p}.wa.proj_out.weight": r(c, c), f"{p}.wa.proj_out.bias": r(c), f"{p}.lambda_wa": r(1, c, 1, 1)})
        for mlp in ("mlp_ra", "mlp_wa"):
            state.update({f"{p}.{mlp}.fc1.weight": r(2 * c, c, 1, 1), f"{p}.{mlp}.fc1.bias": r(2 * c),
                          f"{p}.{mlp}.fc2.weight": r(c, 2 * c, 1, 1), f"{p}.{mlp}.fc2.bias": r(c)})
    state["middle_blks.0.conv.weight"], state["middle_blks.0.conv.bias"] = r(c, c, 3, 3), r(c)
    for i in range(2):
        state[f"ups.{i}.0.weight"] = r(2 * c, c, 1, 1)
        c //= 2
        naf(f"decoders.{i}.0", c)
    return state


def ln2d(s, p, x):
    mu = x.mean(1, keepdim=True)
    var = (x - mu).pow(2).mean(1, keepdim=True)
    return s[f"{p}.weight"].view(1, -1, 1, 1) * (x - mu) / (var + 1e-6).sqrt() + s[f"{p}.bias"].view(1, -1, 1, 1)


def naf_forward(s, p, inp):
    conv = lambda t, n, **kw: F.conv2d(t, s[f"{p}.{n}.weight"], s[f"{p}.{n}.bias"], **kw)    # noqa: E731
    x = conv(conv(ln2d(s, f"{p}.norm1", inp), "conv1"), "conv2", padding=1, groups=s[f"{p}.conv2.weight"].shape[0])
    a, b = x.chunk(2, 1)
    x = a * b
    x = conv(x * F.conv2d(x.mean((2, 3), keepdim=True), s[f"{p}.sca.1.weight"], s[f"{p}.sca.1.bias"]), "conv3")
    y = inp + x * s[f"{p}.beta"]
    a, b = conv(ln2d(s, f"{p}.norm2", y), "conv4").chunk(2, 1)
    return y + conv(a * b, "conv5") * s[f"{p}.gamma"]


def authors_mask(labels: torch.Tensor) -> torch.Tensor:
    """Their correlation_mask_oneBYone: per image, sum over classes of region @ region^T; (1 - .) * -1000."""
    b, h, w = labels.shape
    out = []
    for image in labels:
        corr = torch.zeros(h * w, h * w, dtype=torch.float64)
        for cls in range(int(image.max()) + 1):
            region = (image == cls).double().reshape(-1, 1)
            corr += region @ region.T
        out.append((1 - corr) * -1000)
    return torch.stack(out)


def authors_forward(s: dict, inp: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    mask = authors_mask(F.interpolate(labels[:, None].double(), scale_factor=0.25, mode="nearest")[:, 0].long())
    x = F.conv2d(inp, s["intro.weight"], s["intro.bias"], padding=1)
    encs = []
    for i in range(2):
        x = naf_forward(s, f"encoders.{i}.0", x)
        encs.append(x)
        x = F.conv2d(x, s[f"downs.{i}.weight"], s[f"downs.{i}.bias"], stride=2)
    shortcut = x
    b, c, h, w = x.shape
    block_in = x
    for j in range(3):
        p = f"middle_blks.0.layers.{j}"
        pw = lambda t, n: F.conv2d(t, s[f"{p}.{n}.weight"], s[f"{p}.{n}.bias"])           # noqa: E731
        # region attention: 'b (head c) h w -> b head (h w) c', logits * heads^-0.5 + mask
        q, k, v = (t.reshape(b, HEADS, c // HEADS, h * w).transpose(2, 3) for t in pw(ln2d(s, f"{p}.norm_ra", x), "ra.qkv").chunk(3, 1))
        att = ((q @ k.transpose(-2, -1)) * HEADS ** -0.5 + mask[:, None]).softmax(-1) @ v
        x = x + s[f"{p}.lambda_ra"] * pw(att.transpose(2, 3).reshape(b, c, h, w), "ra.project_out")
        x = x + pw(F.gelu(pw(ln2d(s, f"{p}.norm_ra_mlp", x), "mlp_ra.fc1")), "mlp_ra.fc2")
        # window attention: 4x4 windows of the channel-last map
        t = ln2d(s, f"{p}.norm_wa", x).permute(0, 2, 3, 1)
        wins = t.reshape(b, h // WINDOW, WINDOW, w // WINDOW, WINDOW, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, WINDOW * WINDOW, c)
        qkv = (wins @ s[f"{p}.wa.qkv.weight"].T + s[f"{p}.wa.qkv.bias"]).reshape(wins.shape[0], -1, 3, HEADS, c // HEADS)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        o = (((q @ k.transpose(-2, -1)) * HEADS ** -0.5).softmax(-1) @ v).transpose(1, 2).reshape(wins.shape[0], -1, c)
        o = o @ s[f"{p}.wa.proj_out.weight"].T + s[f"{p}.wa.proj_out.bias"]
        o = o.reshape(b, h // WINDOW, w // WINDOW, WINDOW, WINDOW, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        x = x + s[f"{p}.lambda_wa"] * o.permute(0, 3, 1, 2)
        x = x + pw(F.gelu(pw(ln2d(s, f"{p}.norm_wa_mlp", x), "mlp_wa.fc1")), "mlp_wa.fc2")
    x = F.conv2d(x, s["middle_blks.0.conv.weight"], s["middle_blks.0.conv.bias"], padding=1) + block_in
    x = x + shortcut
    for i, skip in zip(range(2), encs[::-1]):
        x = F.pixel_shuffle(F.conv2d(x, s[f"ups.{i}.0.weight"]), 2) + skip
        x = naf_forward(s, f"decoders.{i}.0", x)
    return F.conv2d(x, s["ending.weight"], s["ending.bias"], padding=1) + inp


def small_rat() -> RAT:
    return RAT(width=WIDTH, enc_blocks=(1, 1), dec_blocks=(1, 1), middle_blocks=3, heads=HEADS).double().eval()


def test_authors_weights_and_masks_give_the_authors_output():
    state = authors_state_dict()
    model = small_rat()
    model.load_state_dict(convert_official_state_dict({"state_dict": {f"module.{k}": v for k, v in state.items()}}),
                          strict=True)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 32, 16, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 32, 16), generator=g)
    labels[:, :16] = 3                                               # a region spanning many cells
    with torch.no_grad():
        torch.testing.assert_close(model(x, regions=labels), authors_forward(state, x, labels), rtol=1e-9, atol=1e-9)
        # the regions matter: another partition changes the output
        assert not torch.allclose(model(x, regions=labels), model(x, regions=torch.zeros_like(labels)))


def test_the_fallback_regions_are_intensity_quartiles_of_4x4_cells():
    g = torch.Generator().manual_seed(2)
    x = torch.rand(1, 1, 32, 32, generator=g)
    labels = intensity_regions(x, 4, 4)
    cells = F.avg_pool2d(x, 4)[0, 0]
    assert labels.shape == (1, 8, 8) and torch.bincount(labels.flatten()).tolist() == [16, 16, 16, 16]
    assert all(cells[labels[0] == k].max() < cells[labels[0] == k + 1].min() for k in range(3))
    model = small_rat()
    xd = x.double()
    with torch.no_grad():                # no regions given = the fallback's, upsampled to the image
        own = model(xd)
        given = model(xd, regions=labels[0].repeat_interleave(4, 0).repeat_interleave(4, 1)[None])
    torch.testing.assert_close(own, given)


def test_odd_sizes_and_bad_regions():
    model = small_rat().float()
    x = torch.rand(2, 1, 13, 17)
    with torch.no_grad():
        assert model(x).shape == x.shape
        assert model(x, regions=torch.randint(0, 4, (2, 13, 17))).shape == x.shape
    for bad in (torch.zeros(2, 13, 17), torch.zeros(2, 12, 17, dtype=torch.long), -torch.ones(2, 13, 17, dtype=torch.long)):
        with pytest.raises(ValueError, match="regions must be a"):
            model(x, regions=bad)


def test_sizes():
    assert round(costs.count_params(models.create_model("rat")) * 1e6) == 15_945_025        # the authors' class
    full = costs.count_params(models.create_model("rat"))
    assert 0.7 <= costs.count_params(models.create_model("rat_tiny")) / (full / models.TINY_DIVISOR) <= 1.3


def test_the_harness_passes_the_datas_region_masks_to_rat_and_to_no_other_model(tmp_path, monkeypatch):
    import numpy as np
    from benchmark.harness import run
    from benchmark.results import store
    from benchmark.data import __main__ as data_cli
    from benchmark.harness.grid import load_grid
    from tests.helpers import TINY
    raw = tmp_path / "raw"
    for sub in ("hq", "lq", "regions"):
        (raw / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(10):                                  # PET pairs (SUV) with a two-region mask each
        hq = rng.random((32, 32, 2)).astype(np.float32) * 5           # two 32x32 slices (slices last)
        np.save(raw / "hq" / f"p{i}.npy", hq)
        np.save(raw / "lq" / f"p{i}.npy", np.clip(hq + rng.normal(0, 0.5, hq.shape), 0, None).astype(np.float32))
        np.save(raw / "regions" / f"p{i}.npy", (hq > 2.5).astype(np.int16))
    assert data_cli.main(["prepare", "pet_synthesis", "--src", str(raw), "--out", str(tmp_path / "pet"), "--quiet"]) == 0
    calls = []
    forward = RAT.forward

    def spy(self, x, task=None, regions=None):
        calls.append(regions is not None and tuple(regions.shape) == (x.shape[0], *x.shape[2:]))
        return forward(self, x, task, regions)
    monkeypatch.setattr(RAT, "forward", spy)
    grid = tmp_path / "ratpet.yaml"
    grid.write_text(f"name: ratpet\nbase:\n  task: pet_synthesis\n  data: {{sources: {{pet_synthesis: {tmp_path / 'pet'}}}}}\n"
                    "axes:\n  zip:\n    label: [RAT, SRCNN]\n    model.name: [rat, srcnn]\n")
    argv = ["--grid", str(grid), "--out", str(tmp_path / "runs"), "--tables", str(tmp_path / "tables"), "--quiet",
            "--jobs", "1"] + [a for o in TINY for a in ("--set", o)]
    assert run.main(argv) == 0                           # SRCNN would fail if it were given regions
    # 6 training steps, 2 validations of 2 images, 2 test images: all with the data's masks (the ERF's
    # synthetic inputs and the latency probe have none: the model's fallback regions)
    assert sum(calls) >= 6 + 4 + 2
    specs = load_grid(grid, "smoke", TINY).specs
    assert all(store.run_state(tmp_path / "runs" / "ratpet" / s.folder_name)["state"] == "done" for s in specs)


def _explicit_region_attention(self, x, mask):
    """The authors' region attention written out: the (B, heads, L, L) logits held in memory."""
    b, c, h, w = x.shape
    q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w).transpose(2, 3) for t in self.qkv(x).chunk(3, dim=1))
    logits = q @ k.transpose(-2, -1) * self.heads ** -0.5 + mask[:, None]
    return self.project_out((logits.softmax(-1) @ v).transpose(2, 3).reshape(b, c, h, w))


def test_the_fused_region_attention_counts_the_macs_of_the_two_products(monkeypatch):
    model = small_rat().float()
    fused, uncounted = costs.count_macs(model, (1, 1, 32, 32), convention="full")
    assert uncounted == []
    from models import rat
    monkeypatch.setattr(rat.RegionAttention, "forward", _explicit_region_attention)
    explicit, _ = costs.count_macs(model, (1, 1, 32, 32), convention="full")   # fvcore's own matmul counts
    assert fused == pytest.approx(explicit, rel=1e-12)


MEMORY_PROBE = """
import resource, sys, torch
from models.rat import RegionAttention, intensity_regions, region_mask
torch.manual_seed(0)
side = 96                                                   # L = 9,216 tokens: 2.7 GB of logits over 8 heads
layer, x = RegionAttention(16, 8).eval(), torch.randn(1, 16, side, side)
mask = region_mask(intensity_regions(torch.randn(1, 1, side, side), 1, 4))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with torch.no_grad():
    layer(x, mask)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


def test_region_attention_does_not_hold_its_logits():
    """At a 512x512 slice the full-size model's logits are 8.6 GB (16,384 tokens, 8 heads): the
    rehearsal's CT validation ran out of memory on them. The fused kernel holds blocks only."""
    import subprocess
    import sys
    tokens, heads = 96 * 96, 8
    logits = heads * tokens * tokens * 4                                  # bytes of one float32 copy
    grown = int(subprocess.run([sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, check=True,
                               env={**__import__("os").environ, "OMP_NUM_THREADS": "1"}).stdout.split()[-1])
    assert grown < logits / 4, f"peak memory grew {grown / 2**20:.0f} MB during the attention (logits: {logits / 2**20:.0f} MB)"
