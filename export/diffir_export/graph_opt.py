"""Export-time graph rewrites for CPU speed, on by default (`export --no-optimize` keeps the plain graph).

`channel_means_as_conv`: every LayerNorm of DIRformer takes two means over the channels of an NCHW tensor
(`ReduceMean` over axis 1: the mean, then the variance). onnxruntime's CPU provider runs that strided
reduction slowly; a 1×1 convolution to one channel with weights 1/C computes the same mean as a matrix
product, which it runs well: −8.9 % backbone time on a real-size realsr_x2 at LR 128 (BENCHMARKS.md, "A lead
for CPU speed"), outputs within 1e-6. Each mean's channel count is read from one onnxruntime run of the graph
on an example input (C does not depend on the image size). The rewritten graph is verified like every export
(against PyTorch within TOLERANCE); `optimize_bundle` rewrites an existing bundle and verifies it against
its plain graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import yaml
from onnx import helper, numpy_helper

from diffir_export.bundle import dump_bundle_yaml

# The rewrites applied, in order, as bundle.yaml's provenance.graph_rewrites names them.
REWRITES = ("channel_means_as_conv",)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def channel_counts(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, int]:
    """The channel count of every 4-D tensor a `ReduceMean` reads, from one run with them as extra outputs."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = list(dict.fromkeys(n.input[0] for n in probe.graph.node if n.op_type == "ReduceMean"))
    known = {o.name for o in probe.graph.output}
    extra = [n for n in names if n not in known]
    if not extra:  # an empty list of outputs would mean every output to onnxruntime
        return {}
    for name in extra:
        probe.graph.output.append(onnx.ValueInfoProto(name=name))
    outs = _session(probe).run(extra, feed)
    return {name: int(o.shape[1]) for name, o in zip(extra, outs, strict=True) if o.ndim == 4}


def _axes(node: onnx.NodeProto) -> list[int] | None:
    for a in node.attribute:
        if a.name == "axes":
            return list(a.ints)
    return None


def _keepdims(node: onnx.NodeProto) -> bool:
    return all(a.i != 0 for a in node.attribute if a.name == "keepdims")


def channel_means_as_conv(model_bytes: bytes, feed: dict[str, np.ndarray]) -> tuple[bytes, int]:
    """Rewrite every float32 `ReduceMean(axes=[1], keepdims=1)` of a 4-D tensor as a 1×1 `Conv` with weights
    1/C; returns the new model and how many were rewritten (0: the bytes are returned unchanged)."""
    model = onnx.load_from_string(model_bytes)
    counts = channel_counts(model, feed)
    nodes, n = [], 0
    for node in model.graph.node:
        c = counts.get(node.input[0]) if node.op_type == "ReduceMean" and not node.domain else None
        if c and _axes(node) == [1] and _keepdims(node) and len(node.input) == 1:
            w = numpy_helper.from_array(np.full((1, c, 1, 1), 1.0 / c, np.float32), f"{node.name}/mean_weight")
            model.graph.initializer.append(w)
            conv = helper.make_node("Conv", [node.input[0], w.name], list(node.output), name=f"{node.name}/as_conv")
            nodes.append(conv)
            n += 1
        else:
            nodes.append(node)
    if n == 0:
        return model_bytes, 0
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString(), n


def max_diff(a: bytes, b: bytes, feeds: list[dict[str, np.ndarray]]) -> float:
    """The largest |difference| between two graphs' first outputs over the feeds."""
    sa, sb = _session(onnx.load_from_string(a)), _session(onnx.load_from_string(b))
    return max(float(np.abs(sa.run(None, f)[0] - sb.run(None, f)[0]).max()) for f in feeds)


def backbone_feeds(meta: dict, sizes: list[tuple[int, int]], seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Random backbone inputs (image in [0, 1], a standard-normal prior) at each LQ size of a bundle."""
    rng = np.random.default_rng(seed)
    c, d = meta["input_channels"], meta["ipr_dim"]
    return [
        {
            "image": rng.random((1, c, h, w), dtype=np.float32),
            "ipr": rng.standard_normal((1, d)).astype(np.float32),
        }
        for h, w in sizes
    ]


def optimize_bundle(folder: Path, tolerance: float, log=print) -> int:
    """Apply the rewrites to an existing bundle's float32 backbone in place, verified against its plain graph
    within `tolerance` at two sizes; bundle.yaml's provenance records them. Returns the nodes rewritten
    (0: already rewritten, or nothing to rewrite; nothing written)."""
    folder = Path(folder)
    meta = yaml.safe_load((folder / "bundle.yaml").read_text())
    prov = meta.setdefault("provenance", {})
    if prov.get("graph_rewrites"):
        log(f"{folder}: already rewritten ({', '.join(prov['graph_rewrites'])})")
        return 0
    path = folder / meta["graphs"]["backbone"]["file"]
    plain = path.read_bytes()
    m = meta["size_multiple"]
    feeds = backbone_feeds(meta, [(2 * m, 2 * m), (2 * m, 3 * m)])
    rewritten, n = channel_means_as_conv(plain, feeds[0])
    if n == 0:
        log(f"{folder}: nothing to rewrite")
        return 0
    diff = max_diff(plain, rewritten, feeds)
    if diff > tolerance:
        raise ValueError(f"{path}: the rewritten backbone differs by {diff:.3e} > {tolerance:.1e}; nothing written")
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(rewritten)
    tmp.replace(path)
    prov["graph_rewrites"] = list(REWRITES)
    dump_bundle_yaml(folder / "bundle.yaml", meta)
    log(f"{folder}: {n} channel means rewritten; max |diff| {diff:.1e} against the plain backbone")
    return n
