"""Peak memory of a large restore: a 3000×2000 photo-like PNG, x4 with the built-in model at the default tile.

    python scripts/peak_memory.py [--binary target/release/diffir] [--size 2000x3000] [--backend ort-cpu]

Reports the child's peak resident set size (getrusage) against the size of the float32 output buffer.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default="target/release/diffir")
    p.add_argument("--size", default="2000x3000", help="HxW of the input")
    p.add_argument("--backend", default="ort-cpu")
    p.add_argument("--extra", nargs="*", default=[], help="more arguments for diffir restore")
    args = p.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([np.sin(x / 37.0), np.cos(y / 23.0), np.sin((x + y) / 51.0)], axis=2) * 0.35 + 0.5
        img = np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1)
        Image.fromarray((img * 255).astype(np.uint8)).save(f"{tmp}/in.png")
        t = time.time()
        cmd = [args.binary, "restore", f"{tmp}/in.png", "-o", f"{tmp}/out.png", "--backend", args.backend]
        subprocess.run(cmd + args.extra, check=True)
        elapsed = time.time() - t
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        out_mb = (4 * h) * (4 * w) * 3 * 4 / 2**20
        size = Path(f"{tmp}/out.png").stat().st_size / 2**20
    print(f"input {w}x{h} -> {4 * w}x{4 * h}, backend {args.backend}, {elapsed:.0f} s")
    print(f"peak RSS {peak_mb:.0f} MiB; float32 output buffer {out_mb:.0f} MiB; "
          f"peak - output buffer = {peak_mb - out_mb:.0f} MiB; PNG written {size:.0f} MiB")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
