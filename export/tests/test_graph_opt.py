"""Export-time rewrites (graph_opt): the rewritten backbone computes what the plain export computes, bundles
record the rewrite, and `optimize` on an existing bundle is verified and idempotent."""

import shutil

import numpy as np
import onnx
import pytest
import yaml

from conftest import BUNDLES, FIXTURE_NAMES, OFFICIAL, needs_shared
from diffir_export import checkpoint, graph_opt
from diffir_export.onnx_export import TOLERANCE, export_bundle


def channel_means(path) -> int:
    """ReduceMean nodes over axis 1 left in a graph."""
    model = onnx.load(path)
    return sum(1 for n in model.graph.node if n.op_type == "ReduceMean" and graph_opt._axes(n) == [1])


def as_conv(path) -> int:
    return sum(1 for n in onnx.load(path).graph.node if n.name.endswith("/as_conv"))


def rewrites(folder) -> list:
    return yaml.safe_load((folder / "bundle.yaml").read_text())["provenance"].get("graph_rewrites", [])


@needs_shared
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_optimized_export_matches_the_plain_export(name, tmp_path):
    model, cfg, ckpt = checkpoint.load(OFFICIAL / name / "checkpoint.pth")
    prov = {"checkpoint_sha256": ckpt.sha256}
    export_bundle(model, cfg, tmp_path / "plain", prov, log=lambda s: None, optimize=False)
    export_bundle(model, cfg, tmp_path / "opt", prov, log=lambda s: None)
    plain, opt = tmp_path / "plain" / "backbone.onnx", tmp_path / "opt" / "backbone.onnx"
    assert rewrites(tmp_path / "plain") == [] and rewrites(tmp_path / "opt") == ["channel_means_as_conv"]
    assert channel_means(plain) > 0 and channel_means(opt) == 0
    assert as_conv(opt) == channel_means(plain)
    # Larger than the export's own verification sizes, and not square.
    meta = yaml.safe_load((tmp_path / "opt" / "bundle.yaml").read_text())
    m = meta["size_multiple"]
    feeds = graph_opt.backbone_feeds(meta, [(4 * m, 5 * m), (3 * m, 2 * m)], seed=7)
    assert graph_opt.max_diff(plain.read_bytes(), opt.read_bytes(), feeds) <= 1e-4
    # The other graphs are untouched by the rewrite.
    for graph in ("cpen.onnx", "denoiser.onnx", "cpen_features.onnx", "cpen_head.onnx"):
        assert (tmp_path / "plain" / graph).read_bytes() == (tmp_path / "opt" / graph).read_bytes()


@pytest.mark.parametrize("name", sorted(p.name for p in BUNDLES.iterdir()))
def test_committed_bundles_carry_the_rewrite(name):
    assert rewrites(BUNDLES / name) == ["channel_means_as_conv"]
    assert channel_means(BUNDLES / name / "backbone.onnx") == 0
    assert as_conv(BUNDLES / name / "backbone.onnx") > 0


def test_builtin_model_carries_the_rewrite():
    builtin = BUNDLES.parents[2] / "onnx" / "diffir-x4-small"
    assert rewrites(builtin) == ["channel_means_as_conv"]
    assert channel_means(builtin / "backbone.onnx") == 0


@needs_shared
def test_optimize_existing_bundle_is_verified_and_idempotent(tmp_path):
    model, cfg, ckpt = checkpoint.load(OFFICIAL / "mini_sr_x2" / "checkpoint.pth")
    folder = tmp_path / "b"
    export_bundle(model, cfg, folder, {"checkpoint_sha256": ckpt.sha256}, log=lambda s: None, optimize=False)
    plain = (folder / "backbone.onnx").read_bytes()
    before = (folder / "bundle.yaml").read_text()
    # A bound no graph can meet: refused, nothing changed.
    with pytest.raises(ValueError, match="differs by"):
        graph_opt.optimize_bundle(folder, tolerance=-1.0, log=lambda s: None)
    assert (folder / "backbone.onnx").read_bytes() == plain
    assert (folder / "bundle.yaml").read_text() == before
    n = graph_opt.optimize_bundle(folder, TOLERANCE, log=lambda s: None)
    assert n > 0 and rewrites(folder) == ["channel_means_as_conv"]
    assert channel_means(folder / "backbone.onnx") == 0
    # Everything else in bundle.yaml is kept.
    old, new = yaml.safe_load(before), yaml.safe_load((folder / "bundle.yaml").read_text())
    new["provenance"].pop("graph_rewrites")
    assert old == new
    # A second run changes nothing.
    rewritten = (folder / "backbone.onnx").read_bytes()
    assert graph_opt.optimize_bundle(folder, TOLERANCE, log=lambda s: None) == 0
    assert (folder / "backbone.onnx").read_bytes() == rewritten


def test_graph_without_channel_means_is_returned_unchanged():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 4, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 1, 1])
    node = onnx.helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3])
    model = onnx.helper.make_model(
        onnx.helper.make_graph([node], "g", [x], [y]), opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8
    )
    data = model.SerializeToString()
    out, n = graph_opt.channel_means_as_conv(data, {"x": np.ones((1, 3, 4, 4), np.float32)})
    assert n == 0 and out == data
    # A graph with no ReduceMean at all (an already rewritten backbone).
    builtin = (BUNDLES.parents[2] / "onnx" / "diffir-x4-small" / "backbone.onnx").read_bytes()
    feed = {"image": np.zeros((1, 3, 16, 16), np.float32), "ipr": np.zeros((1, 64), np.float32)}
    out, n = graph_opt.channel_means_as_conv(builtin, feed)
    assert n == 0 and out == builtin


def test_copy_of_a_committed_bundle_is_not_rewritten_twice(tmp_path):
    shutil.copytree(BUNDLES / "sr_x4", tmp_path / "b")
    assert graph_opt.optimize_bundle(tmp_path / "b", TOLERANCE, log=lambda s: None) == 0
