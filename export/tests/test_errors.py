"""Every way a checkpoint can be wrong gives one clear line and writes nothing."""

import numpy as np
import pytest
import torch

from conftest import BUNDLES, run_bundle
from diffir_export import onnx_export
from diffir_export.arch import DiffIRS2
from diffir_export.cli import main
from diffir_export.config import ModelConfig

TINY = ModelConfig(
    family="sr",
    scale=4,
    dim=4,
    num_blocks=(1, 1, 1, 1),
    num_refinement_blocks=1,
    n_encoder_res=1,
    ipr_dim=32,
    ffn_expansion_factor=2.2,
    layernorm_type="BiasFree",
)


def official_sd():
    torch.manual_seed(0)
    return DiffIRS2(TINY).official_state_dict()


def export(tmp_path, sd_or_obj, capsys, extra=()):
    ckpt = tmp_path / "ckpt.pth"
    if isinstance(sd_or_obj, bytes):
        ckpt.write_bytes(sd_or_obj)
    else:
        torch.save(sd_or_obj, ckpt)
    out = tmp_path / "bundle"
    code = main(["export", "--checkpoint", str(ckpt), "--out", str(out), *extra])
    err = capsys.readouterr().err.strip()
    return code, err, out


def assert_refused(code, err, out, *needles):
    assert code != 0
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    assert not out.exists()
    assert not list(out.parent.glob(".diffir-export-*"))


def test_missing_key(tmp_path, capsys):
    sd = official_sd()
    del sd["G.latent.0.attn.qkv.weight"]
    assert_refused(*export(tmp_path, {"params_ema": sd}, capsys), "missing keys", "G.latent.0.attn.qkv.weight")


def test_extra_key(tmp_path, capsys):
    sd = official_sd()
    sd["G.extra.weight"] = torch.zeros(3)
    assert_refused(*export(tmp_path, {"params": sd}, capsys), "unexpected keys", "G.extra.weight")


def test_wrong_shape(tmp_path, capsys):
    sd = official_sd()
    sd["G.latent.0.attn.temperature"] = torch.ones(8, 1, 1, 1)
    assert_refused(*export(tmp_path, sd, capsys), "wrong shapes", "G.latent.0.attn.temperature")


def test_inconsistent_alias(tmp_path, capsys):
    sd = official_sd()
    sd["diffusion.model.resmlp.0.bias"] = sd["denoise.resmlp.0.bias"] + 1
    assert_refused(*export(tmp_path, sd, capsys), "aliases differ", "diffusion.model.resmlp.0.bias")


def test_schedule_mismatch(tmp_path, capsys):
    sd = official_sd()
    sd["diffusion.posterior_mean_coef2"] = sd["diffusion.posterior_mean_coef2"] * 1.01
    assert_refused(*export(tmp_path, sd, capsys), "schedule buffers", "posterior_mean_coef2")


def test_not_a_checkpoint(tmp_path, capsys):
    assert_refused(*export(tmp_path, b"this is not a checkpoint", capsys), "not a PyTorch checkpoint")
    assert_refused(*export(tmp_path, {"weights": [1, 2, 3]}, capsys), "not a DiffIR checkpoint")


def test_config_conflict_names_the_field(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "family: sr\nscale: 4\ndim: 4\nnum_blocks: [1, 1, 1, 1]\nnum_refinement_blocks: 2\n"
        "n_encoder_res: 1\nipr_dim: 32\nffn_expansion_factor: 2.2\nlayernorm_type: BiasFree\n"
    )
    code, err, out = export(tmp_path, official_sd(), capsys, ["--config", str(cfg)])
    assert_refused(code, err, out, "num_refinement_blocks (config 2, checkpoint 1)")


def test_verification_failure_refuses(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(onnx_export, "TOLERANCE", -1.0)
    code, err, out = export(tmp_path, official_sd(), capsys)
    assert_refused(code, err, out, "verification failed")


def test_export_prints_figures_and_writes_bundle(tmp_path, capsys):
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"params_ema": official_sd()}, ckpt)
    code = main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "b")])
    printed = capsys.readouterr().out
    assert code == 0
    assert printed.count("max |onnxruntime - torch|") == 10
    files = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert files == [
        "backbone.onnx",
        "bundle.yaml",
        "cpen.onnx",
        "cpen_features.onnx",
        "cpen_head.onnx",
        "denoiser.onnx",
    ]
    # A second export into the same folder is refused without --overwrite.
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "b")]) != 0
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(p.name for p in BUNDLES.iterdir()))
def test_committed_bundles_match_their_references(name):
    z = np.load(BUNDLES / name / "reference.npz")
    got = run_bundle(BUNDLES / name, z["cpen_image"], z["noise"])
    assert np.abs(got["ipr"] - z["ipr"]).max() <= 1e-5
    assert np.abs(got["output"] - z["backbone_output"]).max() <= 5e-5
