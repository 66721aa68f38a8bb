"""Export-time rewrites compute the same function: grouped depthwise convolutions (exact), and float16 graphs
whose reductions stay in float32."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest
import torch

from diffir_export.arch import DiffIRS2
from diffir_export.config import ModelConfig
from diffir_export.onnx_export import BackboneGraph, export_graph
from diffir_export.rewrite import group_depthwise

# hidden widths 17 and 35 (int(8·2.2), int(16·2.2)): not multiples of any group size, so padding is exercised
CFG = ModelConfig(family="sr", scale=4, dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1,
                  heads=(1, 2, 4, 8), ffn_expansion_factor=2.2, layernorm_type="BiasFree", n_encoder_res=1,
                  n_denoise_res=1, ipr_dim=32)  # fmt: skip


@pytest.fixture(scope="module")
def model() -> DiffIRS2:
    torch.manual_seed(3)
    return DiffIRS2(CFG).eval()


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, 24, 40, generator=g), torch.randn(1, 32, generator=g)


@pytest.mark.parametrize("k", [2, 4, 8, 16])
def test_grouped_depthwise_is_the_same_function(model, k):
    x, ipr = _inputs()
    g = group_depthwise(copy.deepcopy(model.G), k)
    ff = g.encoder_level1[0].ffn
    assert ff.hidden % k == 0 and ff.dwconv.groups == 2 * ff.hidden // k
    with torch.no_grad():
        want, got = model.G(x, ipr), g(x, ipr)
    assert want.abs().max() > 0.1
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    # and through onnxruntime, as exported
    onnx_bytes = export_graph(BackboneGraph(SimpleNamespace(G=g)), "backbone", (x, ipr))
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    out = sess.run(None, {"image": x.numpy(), "ipr": ipr.numpy()})[0]
    assert np.abs(out - want.numpy()).max() <= 1e-4


def test_group_size_must_be_a_power_of_two(model):
    with pytest.raises(ValueError, match="power of two"):
        group_depthwise(copy.deepcopy(model.G), 3)


def test_float16_graph_keeps_reductions_in_float32(model):
    x, ipr = _inputs(1)
    half = copy.deepcopy(model.G).half()
    with torch.no_grad():
        want = model.G(x, ipr)
        got = half(x.half(), ipr.half())
    assert got.dtype == torch.float16
    # float16 activations: about 1e-3 of the output range, never NaN/Inf
    assert torch.isfinite(got).all()
    assert (got.float() - want).abs().max() <= 5e-3 * want.abs().max()
