"""Export options: the fp16 backbone (float32 I/O, verified against PyTorch float32), the backbone output's own
axis names, and `upgrade` for bundles written before that fix."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml

from conftest import BUNDLES
from diffir_export.arch import DiffIRS2
from diffir_export.config import ModelConfig
from diffir_export.onnx_export import FP16_TOLERANCE, export_bundle, upgrade_bundle

CFG = ModelConfig(family="sr", scale=2, dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1,
                  heads=(1, 2, 4, 8), ffn_expansion_factor=2.2, layernorm_type="BiasFree", n_encoder_res=1,
                  n_denoise_res=1, ipr_dim=32, name="tiny_x2")  # fmt: skip


def _dims(path, io: str, name: str) -> list[str]:
    graph = onnx.load(path).graph
    value = next(v for v in getattr(graph, io) if v.name == name)
    return [d.dim_param or str(d.dim_value) for d in value.type.tensor_type.shape.dim]


@pytest.fixture(scope="module")
def fp16_bundle(tmp_path_factory):
    torch.manual_seed(5)
    out = tmp_path_factory.mktemp("fp16") / "bundle"
    results = export_bundle(DiffIRS2(CFG).eval(), CFG, out, {}, log=lambda s: None, fp16=True)
    return out, results


def test_fp16_backbone_is_exported_verified_and_declared(fp16_bundle):
    out, results = fp16_bundle
    meta = yaml.safe_load((out / "bundle.yaml").read_text())
    assert meta["graphs"]["backbone_fp16"] == {
        "file": "backbone_fp16.onnx",
        "inputs": ["image", "ipr"],
        "outputs": ["output"],
    }
    fp16 = [r for r in results if r.graph == "backbone_fp16"]
    assert len(fp16) == 2 and all(r.ok for r in fp16)
    # checked against float32 PyTorch, with a bound relative to the output's range
    assert all(0 < r.max_abs_diff <= r.tolerance for r in fp16)
    assert all(r.tolerance < 10 * FP16_TOLERANCE for r in fp16)
    # float32 in and out, float16 inside
    model = onnx.load(out / "backbone_fp16.onnx")
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.FLOAT] * 2
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    # and it runs on onnxruntime's CPU provider, close to the float32 graph
    x = np.random.default_rng(0).random((1, 3, 32, 48), dtype=np.float32)
    ipr = np.random.default_rng(1).standard_normal((1, 32)).astype(np.float32)
    run = {n: ort.InferenceSession(str(out / f"{n}.onnx"), providers=["CPUExecutionProvider"]) for n in
           ("backbone", "backbone_fp16")}  # fmt: skip
    a, b = (run[n].run(None, {"image": x, "ipr": ipr})[0] for n in ("backbone", "backbone_fp16"))
    assert a.shape == b.shape == (1, 3, 64, 96)
    assert np.abs(a - b).max() <= FP16_TOLERANCE * np.abs(a).max()


def test_without_fp16_no_optional_graph(tmp_path):
    torch.manual_seed(6)
    export_bundle(DiffIRS2(CFG).eval(), CFG, tmp_path / "b", {}, log=lambda s: None)
    meta = yaml.safe_load((tmp_path / "b" / "bundle.yaml").read_text())
    assert "backbone_fp16" not in meta["graphs"]
    assert not (tmp_path / "b" / "backbone_fp16.onnx").exists()


def test_backbone_output_has_its_own_axes(fp16_bundle):
    out, _ = fp16_bundle
    for f in ("backbone.onnx", "backbone_fp16.onnx"):
        assert _dims(out / f, "input", "image")[2:] == ["height", "width"]
        assert _dims(out / f, "output", "output")[2:] == ["out_height", "out_width"], f


def test_upgrade_renames_aliased_output_axes(tmp_path):
    bundle = tmp_path / "old"
    shutil.copytree(BUNDLES / "sr_x4", bundle)
    path = bundle / "backbone.onnx"
    model = onnx.load(path)
    for axis, name in ((2, "height"), (3, "width")):
        model.graph.output[0].type.tensor_type.shape.dim[axis].dim_param = name
    onnx.save(model, path)
    before = onnx.load(path)
    assert upgrade_bundle(bundle, log=lambda s: None) == ["backbone.onnx"]
    after = onnx.load(path)
    assert _dims(path, "output", "output")[2:] == ["out_height", "out_width"]
    # only the declaration changed
    assert [n.SerializeToString() for n in after.graph.node] == [n.SerializeToString() for n in before.graph.node]
    assert upgrade_bundle(bundle, log=lambda s: None) == []
