"""The official fixtures: strict loading by layout, detection, PyTorch and exported-graph parity."""

import json

import numpy as np
import pytest
import torch

from conftest import FIXTURE_NAMES, OFFICIAL, needs_shared, run_bundle
from diffir_export import checkpoint
from diffir_export.config import ModelConfig
from diffir_export.onnx_export import export_bundle
from diffir_export.reference import network_input, run_pipeline

pytestmark = needs_shared

LAYOUT = {
    "mini_sr_x4": "basicsr params_ema",
    "mini_sr_x2": "basicsr params",
    "mini_sr_x1": "basicsr params_ema",
    "mini_deblur": "basicsr params_ema",
    "mini_inpaint": "lightning generator.",
}
FAMILY = {"sr": "sr", "deblur": "deblur", "inpainting": "inpaint"}


@pytest.fixture(scope="module", params=FIXTURE_NAMES)
def fixture(request):
    name = request.param
    model, cfg, ckpt = checkpoint.load(OFFICIAL / name / "checkpoint.pth")
    return name, model, cfg, ckpt


def official_config(name) -> ModelConfig:
    meta = json.loads((OFFICIAL / name / "config.json").read_text())
    kw = meta["official_kwargs"]
    return ModelConfig(
        family=FAMILY[meta["family"]],
        scale=meta["scale"],
        dim=kw["dim"],
        num_blocks=tuple(kw["num_blocks"]),
        num_refinement_blocks=kw["num_refinement_blocks"],
        heads=tuple(kw["heads"]),
        ffn_expansion_factor=kw["ffn_expansion_factor"],
        bias=kw["bias"],
        layernorm_type=kw["LayerNorm_type"],
        n_encoder_res=kw["n_encoder_res"],
        n_denoise_res=kw["n_denoise_res"],
        ipr_dim=256,
        timesteps=kw["timesteps"],
        linear_start=kw["linear_start"],
        linear_end=kw["linear_end"],
    )


def test_layout_rule(fixture):
    name, _, _, ckpt = fixture
    assert ckpt.layout == LAYOUT[name]


def test_mini_sr_x4_takes_params_ema_not_params():
    raw = torch.load(OFFICIAL / "mini_sr_x4" / "checkpoint.pth", map_location="cpu", weights_only=True)
    loaded = checkpoint.read_checkpoint(OFFICIAL / "mini_sr_x4" / "checkpoint.pth").state_dict
    key = "G.patch_embed.proj.weight"
    assert torch.equal(loaded[key], raw["params_ema"][key])
    assert not torch.equal(raw["params"][key], raw["params_ema"][key])


def test_detection_matches_official_kwargs(fixture):
    name, _, cfg, _ = fixture
    meta = json.loads((OFFICIAL / name / "config.json").read_text())
    assert cfg == official_config(name)
    assert cfg.size_multiple == meta["lq_multiple"]


def test_torch_reproduces_reference(fixture):
    name, model, _, _ = fixture
    z = np.load(OFFICIAL / name / "reference.npz")
    with torch.no_grad():
        c, steps = model.sample_ipr(torch.from_numpy(z["input"]), torch.from_numpy(z["noise"]))
        out = model.G(torch.from_numpy(z["input"]), steps[-1]).numpy()
    for key, got in [
        ("c", c.numpy()),
        ("iprs", torch.stack(steps).numpy()),
        ("ipr", steps[-1].numpy()),
        ("output", out),
    ]:
        assert np.abs(got - z[key]).max() <= 1e-5, key


def test_pipeline_reproduces_official_scripts(fixture):
    name, model, _, _ = fixture
    z = np.load(OFFICIAL / name / "pipeline.npz")
    ref = run_pipeline(model, z["image"], z["noise"], z.get("mask", None))
    assert np.abs(ref["output"] - z["output"]).max() <= 1e-5
    off = np.abs(ref["output_u8"].astype(int) - z["output_u8"].astype(int))
    assert off.max() <= 1 and (off > 0).mean() <= 1e-3


def test_exported_graphs_reproduce_reference(fixture, tmp_path):
    name, model, cfg, ckpt = fixture
    export_bundle(model, cfg, tmp_path / name, {"checkpoint_sha256": ckpt.sha256}, log=lambda s: None)
    z = np.load(OFFICIAL / name / "reference.npz")
    got = run_bundle(tmp_path / name, z["input"], z["noise"])
    assert np.abs(got["ipr"] - z["ipr"]).max() <= 1e-5
    assert np.abs(got["iprs"] - z["iprs"]).max() <= 5e-5
    assert np.abs(got["c"] - z["c"]).max() <= 5e-5
    assert np.abs(got["output"] - z["output"]).max() <= 5e-5
    # The whole pipeline too, on the non-multiple image: padding as the official scripts do, the exported
    # graphs, then the crop, the inpainting composite and the clip, against the official output.
    p = np.load(OFFICIAL / name / "pipeline.npz")
    mask = p["mask"] if "mask" in p.files else None
    x = network_input(model, p["image"], mask)
    assert x.shape[2] % cfg.size_multiple == 0 and x.shape[3] % cfg.size_multiple == 0
    h, w = p["image"].shape[:2]
    pred = run_bundle(tmp_path / name, x, p["noise"])["output"][0].transpose(1, 2, 0)
    pred = pred[: h * cfg.scale, : w * cfg.scale]
    if mask is not None:
        m = (mask > 0).astype(np.float32)[..., None]
        pred = m * pred + (1 - m) * p["image"]
    out = np.clip(pred, 0, 1)
    assert out.shape == p["output"].shape
    assert np.abs(out - p["output"]).max() <= 5e-5
