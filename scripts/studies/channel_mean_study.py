"""Study: a backbone's channel means (ReduceMean over axis 1 of NCHW tensors, two per LayerNorm) as 1×1
convolutions with weights 1/C, timed against the graph as exported on onnxruntime's CPU provider.

    python scripts/studies/channel_mean_study.py BACKBONE.onnx [--size 128] [--runs 5] [--threads 2]

Rewrites the graph with the exporter's own rewrite (diffir_export.graph_opt), checks the outputs agree, then
times both interleaved (median of --runs). BENCHMARKS.md, "A lead for CPU speed".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "export"))

from diffir_export import graph_opt  # noqa: E402


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
    data, n = graph_opt.channel_means_as_conv(model.SerializeToString(), feed)
    rewritten = onnx.load_from_string(data)

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
