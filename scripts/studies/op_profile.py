"""Where onnxruntime spends the backbone's time, per operator type: the plain export against the default
(rewritten) export of the same checkpoint, side by side.

    python scripts/studies/op_profile.py [--model realsr_x4] [--size 64] [--threads 2] [--runs 3]

Exports a real-size model with random weights (scripts/compare.py's export, once), runs each backbone with
onnxruntime's profiler on the CPU provider (all optimisations on, as `diffir` runs it), and sums the node
times per operator type over `runs` runs after one warm-up. Prints one Markdown table: ms per run and share
for both graphs. tract's counterpart is `diffir bench --backend tract --op-profile`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compare import random_bundle  # noqa: E402


def profile(bundle: Path, size: int, threads: int, runs: int) -> dict[str, float]:
    """Milliseconds per run per operator type."""
    meta = yaml.safe_load((bundle / "bundle.yaml").read_text())
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as tmp:
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "profile")
        s = ort.InferenceSession(str(bundle / "backbone.onnx"), so, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).random((1, meta["input_channels"], size, size), dtype=np.float32)
        ipr = np.random.default_rng(1).standard_normal((1, meta["ipr_dim"])).astype(np.float32)
        for _ in range(runs + 1):
            s.run(None, {"image": x, "ipr": ipr})
        events = json.loads(Path(s.end_profiling()).read_text())
    # The first run (warm-up) is dropped: node events of run k are the k-th occurrence of each node name.
    seen: dict[str, int] = defaultdict(int)
    out: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        seen[e["name"]] += 1
        if seen[e["name"]] > 1:
            out[e["args"]["op_name"]] += e["dur"] / 1e3 / runs
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="realsr_x4")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "diffir-compare")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    plain = profile(random_bundle(args.model, args.work, optimize=False), args.size, args.threads, args.runs)
    rewritten = profile(random_bundle(args.model, args.work), args.size, args.threads, args.runs)
    tp, tr = sum(plain.values()), sum(rewritten.values())
    print(f"{args.model} backbone, LR {args.size}, {args.threads} threads, onnxruntime {ort.__version__} CPU, "
          f"mean of {args.runs} runs: plain {tp:.0f} ms, rewritten {tr:.0f} ms in operators\n")  # fmt: skip
    print("| operator | plain ms | plain share | rewritten ms | rewritten share |")
    print("|---|---|---|---|---|")
    for op in sorted(set(plain) | set(rewritten), key=lambda o: -max(plain.get(o, 0), rewritten.get(o, 0))):
        a, b = plain.get(op, 0.0), rewritten.get(op, 0.0)
        if max(a / tp, b / tr) < 0.005:
            continue
        print(f"| {op} | {a:.1f} | {100 * a / tp:.1f} % | {b:.1f} | {100 * b / tr:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
