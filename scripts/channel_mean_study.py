"""Study: a backbone's channel means (ReduceMean over axis 1 of NCHW tensors, two per LayerNorm) as 1×1
convolutions with weights 1/C, timed against the graph as exported on onnxruntime's CPU provider.

    python scripts/channel_mean_study.py BACKBONE.onnx [--size 128] [--runs 5] [--threads 2]

Runs the graph once to learn each mean's channel count, rewrites it, checks the outputs agree, then times both
interleaved (median of --runs). BENCHMARKS.md, "A lead for CPU speed".
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper


def channel_counts(model: onnx.ModelProto, feed: dict) -> dict[str, int]:
    """Channel count of every ReduceMean input, from one run with those tensors as extra outputs."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = [n.input[0] for n in probe.graph.node if n.op_type == "ReduceMean"]
    for name in names:
        probe.graph.output.append(onnx.ValueInfoProto(name=name))
    outs = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)
    extra = outs[len(model.graph.output) :]
    return {name: o.shape[1] for name, o in zip(names, extra, strict=True) if o.ndim == 4}


def rewrite(model: onnx.ModelProto, counts: dict[str, int]) -> tuple[onnx.ModelProto, int]:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes, n = [], 0
    for node in out.graph.node:
        axes = [list(a.ints) for a in node.attribute if a.name == "axes"]
        c = counts.get(node.input[0]) if node.op_type == "ReduceMean" else None
        if c and axes == [[1]]:
            w = numpy_helper.from_array(np.full((1, c, 1, 1), 1.0 / c, np.float32), f"{node.name}_mean_w")
            out.graph.initializer.append(w)
            nodes.append(helper.make_node("Conv", [node.input[0], w.name], list(node.output), name=f"{node.name}_conv"))
            n += 1
        else:
            nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out, n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("backbone")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    model = onnx.load(args.backbone)
    image, ipr = model.graph.input[0], model.graph.input[1]
    ipr_dim = ipr.type.tensor_type.shape.dim[1].dim_value
    channels = image.type.tensor_type.shape.dim[1].dim_value
    rng = np.random.default_rng(0)
    feed = {
        image.name: rng.random((1, channels, args.size, args.size), dtype=np.float32),
        ipr.name: rng.standard_normal((1, ipr_dim)).astype(np.float32),
    }
    rewritten, n = rewrite(model, channel_counts(model, feed))

    def session(m: onnx.ModelProto) -> ort.InferenceSession:
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])

    sessions = {"as exported": session(model), "means as 1x1 conv": session(rewritten)}
    outs = {k: s.run(None, feed)[0] for k, s in sessions.items()}
    diff = float(np.abs(outs["as exported"] - outs["means as 1x1 conv"]).max())
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(args.runs):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, feed)
            times[k].append(time.perf_counter() - t)
    print(f"{args.backbone}: {n} channel means rewritten; max |diff| {diff:.1e}")
    print(f"LR {args.size}, {args.threads} threads, median of {args.runs} interleaved runs")
    for k, v in times.items():
        print(f"  {k:<18} median {np.median(v):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
