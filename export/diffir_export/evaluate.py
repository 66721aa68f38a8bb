"""Evaluate an x4 bundle against bicubic on the validation photos, through the `diffir` binary.

Protocol: each val photo is box-reduced (long side ≤ 1280; lossy files at least 2×), mod-cropped to 4; the LR
image is PIL bicubic (antialiased) x4 down; the model's output and PIL bicubic x4 up are compared with the
ground truth by PSNR-Y and SSIM-Y (BT.601 luma, 4-pixel border shaved).

    python -m diffir_export.evaluate --data PHOTOS --binary target/release/diffir [--model BUNDLE] [--out FILE.md]
        [--diffir-arg=--tta]   (extra `diffir restore` flags, repeatable)
        [--lr-jpeg 75]         (the LR image saved as a JPEG of that quality first, as users' inputs often are;
                                bicubic and the model both start from the decoded JPEG)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from diffir_export.data import bicubic_down, bicubic_up, jpeg_round_trip, load_hr, mod_crop, read_list
from diffir_export.metrics import psnr_y, ssim_y

SCALE = 4


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="photo folder with val.txt")
    p.add_argument("--binary", required=True, help="the diffir binary")
    p.add_argument("--model", help="bundle folder (default: the binary's built-in model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="also write the Markdown table here")
    p.add_argument("--diffir-arg", action="append", default=[], help="extra `diffir restore` flag (repeatable)")
    p.add_argument("--lr-jpeg", type=int, metavar="QUALITY", help="compress the LR image as a JPEG of this quality")
    args = p.parse_args(argv)
    rows, lines = [], ["| photo | HR size | bicubic PSNR-Y | model PSNR-Y | gain | bicubic SSIM-Y | model SSIM-Y |",
                       "|---|---|---|---|---|---|---|"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for path in read_list(args.data, "val.txt"):
            hr = mod_crop(load_hr(path), SCALE)
            lr = bicubic_down(hr, SCALE)
            if args.lr_jpeg is not None:
                lr = jpeg_round_trip(lr, args.lr_jpeg)
            Image.fromarray(lr).save(f"{tmp}/lr.png")
            cmd = [args.binary, "restore", f"{tmp}/lr.png", "-o", f"{tmp}/sr.png", "--overwrite",
                   "--seed", str(args.seed)]  # fmt: skip
            if args.model:
                cmd += ["--model", args.model]
            cmd += args.diffir_arg
            subprocess.run(cmd, check=True, capture_output=True)
            sr = np.asarray(Image.open(f"{tmp}/sr.png").convert("RGB"))
            bic = bicubic_up(lr, SCALE)
            r = (psnr_y(bic, hr, SCALE), psnr_y(sr, hr, SCALE), ssim_y(bic, hr, SCALE), ssim_y(sr, hr, SCALE))
            rows.append(r)
            name = path.relative_to(args.data)
            line = f"| {name} | {hr.shape[1]}x{hr.shape[0]} | {r[0]:.2f} | {r[1]:.2f} | {r[1] - r[0]:+.2f} | "
            line += f"{r[2]:.4f} | {r[3]:.4f} |"
            lines.append(line)
            print(line, flush=True)
    m = np.mean(np.array(rows), axis=0)
    lines.append(f"| **mean ({len(rows)} photos)** | | {m[0]:.2f} | {m[1]:.2f} | **{m[1] - m[0]:+.2f}** | "
                 f"{m[2]:.4f} | {m[3]:.4f} |")  # fmt: skip
    print(lines[-1])
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
