"""OpenVINO (onnxruntime plugin) vs onnxruntime's CPU provider vs tract, interleaved, at 1 and 2 threads:
whole-image restores of a real-size realsr_x4 (random weights, scripts/compare.py's export) with `diffir bench`.

    python scripts/plugin_bench.py [--sizes 64 128] [--threads 1 2] [--rounds 3] [--runs 3]

Each round runs every backend once per size and thread count, in turn, so a noisy neighbour touches all of them
alike; the table gives each backend's median over the rounds, with the spread (min–max), and the ratio to the CPU
provider. Needs a release build (cargo build --release), the exporter, and the OpenVINO plugin
(scripts/install-onnxruntime.sh --openvino). The plugin offers devices on Intel hardware only: elsewhere its
column says why it did not run, and the rest of the table is still measured.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import REPO, machine, random_bundle  # noqa: E402

BACKENDS = ["ort-cpu", "ort-openvino", "tract"]


def bench(binary: Path, bundle: Path, backend: str, size: int, threads: int, runs: int) -> float | str:
    """The median ms of `runs` restores, or why the backend did not start."""
    cmd = [str(binary), "bench", "--model", str(bundle), "--size", f"{size}x{size}", "--backend", backend,
           "--threads", str(threads), "--tile", "0", "--runs", str(runs)]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"
    return float(re.search(r"median: ([0-9.]+) ms", p.stdout).group(1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--model", default="realsr_x4")
    p.add_argument("--binary", type=Path, default=REPO / "target" / "release" / "diffir")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "diffir-compare")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    bundle = random_bundle(args.model, args.work)
    times: dict[tuple, list[float]] = {}
    failed: dict[str, str] = {}
    for _ in range(args.rounds):
        for size in args.sizes:
            for threads in args.threads:
                for backend in BACKENDS:
                    if backend in failed:
                        continue
                    r = bench(args.binary, bundle, backend, size, threads, args.runs)
                    if isinstance(r, str):
                        failed[backend] = r
                    else:
                        times.setdefault((backend, size, threads), []).append(r)
    print(f"machine: {machine()}; {args.model}, whole image; median (min–max) of {args.rounds} interleaved rounds, "
          f"each the median of {args.runs} runs; ratio: time / ort-cpu time\n")  # fmt: skip
    print("| LR | threads | " + " | ".join(f"{b} ms | ratio" for b in BACKENDS) + " |")
    print("|---|---|" + "---|---|" * len(BACKENDS))
    for size in args.sizes:
        for threads in args.threads:
            base = statistics.median(times[("ort-cpu", size, threads)])
            cells = []
            for b in BACKENDS:
                t = times.get((b, size, threads))
                if not t:
                    cells.append("not run | —")
                    continue
                m = statistics.median(t)
                cells.append(f"{m:.0f} ({min(t):.0f}–{max(t):.0f}) | {m / base:.2f}")
            print(f"| {size} | {threads} | " + " | ".join(cells) + " |")
    for b, why in failed.items():
        print(f"\n{b} did not run: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
