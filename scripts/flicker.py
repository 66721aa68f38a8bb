#!/usr/bin/env python3
"""Flicker of restored video with one prior per frame against one per shot (BENCHMARKS.md, "Video").

Makes two clips from samples/chelsea.png, each frame degraded on its own (x4 bicubic downscale, Gaussian
noise, JPEG), as a camera on a tripod and as a slow pan would give them:

  still  the same 320x240 view in every frame;
  pan    the view moving right by 4 pixels (1 input pixel) per frame.

It restores each clip (a folder of PNG frames) with `diffir video --prior frame` and `--prior shot`, and
reports for each: flicker, the mean absolute difference between consecutive output frames (for the pan,
after shifting back by the known motion) divided by the same for a bicubic upscale of the input frames
(bicubic = 1; lower is steadier), and the PSNR against the clean frames. With --cost it also times the
restore of a 320x180 clip to 1280x720 per frame (the difference between a 4-frame and a 1-frame run, so
the model's start is left out).

  .venv/bin/python scripts/flicker.py --binary target/release/diffir [--frames 16] [--sigma 5] [--quality 60] [--cost]
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SCALE = 4
HR_W, HR_H = 320, 240
NOISE_SIGMA = 5.0  # on the 0-255 scale
JPEG_QUALITY = 60


def degrade(hr: Image.Image, seed: int, sigma: float, quality: int) -> Image.Image:
    """x4 bicubic downscale, Gaussian noise and JPEG, drawn afresh for each frame."""
    lr = hr.resize((hr.width // SCALE, hr.height // SCALE), Image.BICUBIC)
    rng = np.random.default_rng(seed)
    noisy = np.asarray(lr, dtype=np.float64) + rng.normal(0.0, sigma, (lr.height, lr.width, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy.round(), 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def make_clip(photo: Image.Image, kind: str, args: argparse.Namespace, folder: Path) -> list[np.ndarray]:
    """Writes the degraded frames into folder; returns the clean HR frames."""
    folder.mkdir(parents=True)
    clean = []
    for t in range(args.frames):
        x = SCALE * t if kind == "pan" else 0
        hr = photo.crop((x, 0, x + HR_W, HR_H))
        clean.append(np.asarray(hr, dtype=np.float64))
        degrade(hr, 1000 * (kind == "pan") + t, args.sigma, args.quality).save(folder / f"{t:04d}.png")
    return clean


def read_frames(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) for p in sorted(folder.glob("*.png"))]


def bicubic(folder: Path) -> list[np.ndarray]:
    out = []
    for p in sorted(folder.glob("*.png")):
        im = Image.open(p).convert("RGB")
        out.append(np.asarray(im.resize((im.width * SCALE, im.height * SCALE), Image.BICUBIC), dtype=np.float64))
    return out


def change(frames: list[np.ndarray], shift: int) -> float:
    """Mean absolute difference of consecutive frames, the later one shifted back by `shift` pixels."""
    diffs = []
    for a, b in zip(frames, frames[1:], strict=False):
        w = a.shape[1] - shift
        diffs.append(np.abs(b[:, :w] - a[:, shift : shift + w]).mean())
    return float(np.mean(diffs))


def psnr(frames: list[np.ndarray], clean: list[np.ndarray]) -> float:
    mse = np.mean([np.mean((f - c) ** 2) for f, c in zip(frames, clean, strict=True)])
    return float(10 * np.log10(255.0**2 / mse))


def restore(binary: str, src: Path, out: Path, prior: str, extra: list[str]) -> None:
    cmd = [binary, "video", str(src), "-o", str(out), "--prior", prior, "-q", *extra]
    subprocess.run(cmd, check=True)


def cost(binary: str, photo: Image.Image, extra: list[str], work: Path) -> float:
    """Seconds per 320x180 -> 1280x720 frame: a 4-frame run less a 1-frame run, over 3."""
    times = {}
    for n in (1, 4):
        src = work / f"cost{n}"
        src.mkdir()
        frame = photo.resize((320, 180), Image.BICUBIC)
        for t in range(n):
            frame.save(src / f"{t:04d}.png")
        start = time.perf_counter()
        restore(binary, src, work / f"cost{n}-out", "frame", extra)
        times[n] = time.perf_counter() - start
    return (times[4] - times[1]) / 3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=str(ROOT / "target/release/diffir"))
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--sigma", type=float, default=NOISE_SIGMA, help="noise, in 8-bit levels")
    ap.add_argument("--quality", type=int, default=JPEG_QUALITY, help="JPEG quality")
    ap.add_argument("--cost", action="store_true", help="also time 320x180 -> 1280x720 per frame")
    ap.add_argument("extra", nargs="*", help="more arguments for diffir video (after --)")
    args = ap.parse_args()
    photo = Image.open(ROOT / "samples/chelsea.png").convert("RGB")
    if photo.width < HR_W + SCALE * (args.frames - 1):
        sys.exit(f"the pan needs a photo {HR_W + SCALE * (args.frames - 1)} pixels wide")
    rows = []
    gaps = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for kind in ("still", "pan"):
            src = work / kind
            clean = make_clip(photo, kind, args, src)
            shift = SCALE if kind == "pan" else 0
            base = bicubic(src)
            base_change = change(base, shift)
            rows.append((kind, "bicubic", base_change, 1.0, psnr(base, clean)))
            outputs = {}
            for prior in ("frame", "shot"):
                out = work / f"{kind}-{prior}"
                restore(args.binary, src, out, prior, args.extra)
                frames = outputs[prior] = read_frames(out)
                step = change(frames, shift)
                rows.append((kind, prior, step, step / base_change, psnr(frames, clean)))
            apart = np.mean([np.abs(a - b).mean() for a, b in zip(outputs["frame"], outputs["shot"], strict=True)])
            gaps.append((kind, float(apart)))
        print(
            f"{args.frames} frames of {HR_W // SCALE}x{HR_H // SCALE} -> {HR_W}x{HR_H}, noise sigma "
            f"{args.sigma}, JPEG {args.quality}, extra arguments: {' '.join(args.extra) or 'none'}"
        )
        print("| clip | prior | change between frames (8-bit levels) | flicker (bicubic = 1) | PSNR (dB) |")
        print("|---|---|---:|---:|---:|")
        for kind, prior, step, flicker, db in rows:
            print(f"| {kind} | {prior} | {step:.4f} | {flicker:.4f} | {db:.3f} |")
        for kind, apart in gaps:
            print(f"{kind}: frame and shot outputs differ by {apart:.4f} levels on average")
        if args.cost:
            print(f"cost: {cost(args.binary, photo, args.extra, work):.2f} s per 320x180 -> 1280x720 frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
