"""Time to the first image: process start to file written, against the pure compute `diffir bench` reports.

    python scripts/first_image.py [--binary target/release/diffir] [--size 256] [--rounds 3]

For each backend (onnxruntime CPU and tract) and each round, interleaved: one `diffir restore` of a
SIZE x SIZE PNG with the built-in model and an empty cache folder (cold: onnxruntime optimises its graphs
and stores them), one with the cache the cold run left (warm), and `diffir bench` at the same size (median
of 3 runs after a warm-up: compute only). Prints the medians and the ratios to compute.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def photo(path: Path, size: int) -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    img = np.stack([np.sin(x / 17.0), np.cos(y / 13.0), np.sin((x + y) / 21.0)], axis=2) * 0.35 + 0.5
    img = np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1)
    Image.fromarray((img * 255).astype(np.uint8)).save(path)


def restore(binary: str, backend: str, src: Path, out: Path, cache: Path) -> float:
    env = dict(os.environ, DIFFIR_CACHE_DIR=str(cache))
    t = time.perf_counter()
    cmd = [binary, "restore", str(src), "-o", str(out), "--overwrite", "--backend", backend, "-q"]
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - t


def bench(binary: str, backend: str, size: int, cache: Path) -> float:
    env = dict(os.environ, DIFFIR_CACHE_DIR=str(cache))
    cmd = [binary, "bench", "--backend", backend, "--size", f"{size}x{size}", "--runs", "3"]
    out = subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    m = re.search(r"median:\s+([\d.]+) ms", out.stdout + out.stderr)
    if not m:
        raise SystemExit(f"no median in diffir bench's output:\n{out.stdout}{out.stderr}")
    return float(m.group(1)) / 1000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default="target/release/diffir")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--backends", nargs="*", default=["ort-cpu", "tract"])
    args = p.parse_args()
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.png", Path(tmp) / "out.png"
        photo(src, args.size)
        for r in range(args.rounds):
            for backend in args.backends:
                cache = Path(tmp) / f"cache-{backend}-{r}"
                times.setdefault((backend, "cold"), []).append(restore(args.binary, backend, src, out, cache))
                times.setdefault((backend, "warm"), []).append(restore(args.binary, backend, src, out, cache))
                times.setdefault((backend, "compute"), []).append(bench(args.binary, backend, args.size, cache))
    print(f"built-in model, {args.size}x{args.size} PNG, medians of {args.rounds} interleaved rounds")
    columns = ["backend", "first image, cold", "first image, warm", "compute", "cold / compute", "warm / compute"]
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")
    for backend in args.backends:
        cold, warm, compute = (statistics.median(times[(backend, k)]) for k in ("cold", "warm", "compute"))
        cells = [backend, f"{cold:.2f} s", f"{warm:.2f} s", f"{compute:.2f} s"]
        cells += [f"{cold / compute:.2f}", f"{warm / compute:.2f}"]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
