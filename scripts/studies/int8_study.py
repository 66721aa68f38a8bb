"""Study: a statically quantised int8 backbone (QDQ, per-channel weights) on onnxruntime's CPU provider, against
the keep-it bar: at least 1.5x faster than float32 on realsr_x4 at LR 128, at least 40 dB PSNR against the
float32 output on real photos, and at most 0.15 dB PSNR-Y lost on the built-in model's validation photos.

    python scripts/studies/int8_study.py --photos PHOTOS [--builtin onnx/diffir-x4-small] [--speed-bundle DIR]
        [--calib 16] [--size 128] [--runs 3] [--threads 2] [--work DIR]

PHOTOS is the shared data script's folder (train.txt, val.txt). Conv and MatMul are quantised, except the
LayerNorms' channel means (and, with --keep-ends, the first convolution and the SR tail). Calibration (MinMax):
--calib train photos, centre
256-pixel HR crops taken down x4 (bicubic) with their priors from the float32 CPEN and diffusion loop
(seed 0). Quality: the 12 val photos under the evaluation protocol (diffir_export.evaluate), whole images
(mod-cropped to the size multiple) through onnxruntime in Python; the int8 and float32 backbones get the same
prior. Speed: the backbone alone at LR --size, float32 and int8 interleaved, median of --runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import yaml
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "export"))

from diffir_export.data import bicubic_down, load_hr, mod_crop, read_list  # noqa: E402
from diffir_export.metrics import psnr_y  # noqa: E402

SCALE = 4


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class Prior:
    """The float32 CPEN and reverse diffusion of a bundle (seeded noise)."""

    def __init__(self, bundle: Path) -> None:
        self.meta = yaml.safe_load((bundle / "bundle.yaml").read_text())
        g = self.meta["graphs"]
        self.cpen = session(bundle / g["cpen"]["file"])
        self.den = session(bundle / g["denoiser"]["file"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        s = self.meta["schedule"]
        c = self.cpen.run(None, {"image": x})[0]
        ipr = np.random.default_rng(0).standard_normal((1, self.meta["ipr_dim"])).astype(np.float32)
        for t in reversed(range(s["timesteps"])):
            t_in = np.full((1,), t, dtype=np.int64)
            x0 = self.den.run(None, {"x": ipr, "t": t_in, "condition": c})[0]
            ipr = (np.float32(s["coef1"][t]) * x0 + np.float32(s["coef2"][t]) * ipr).astype(np.float32)
        return ipr


def nchw(img_u8: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img_u8.astype(np.float32).transpose(2, 0, 1)[None] / 255.0)


def u8(out: np.ndarray) -> np.ndarray:
    return (np.clip(out[0].transpose(1, 2, 0), 0, 1) * 255.0).round().astype(np.uint8)


class Reader(CalibrationDataReader):
    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = iter(feeds)

    def get_next(self):
        return next(self.feeds, None)


def calibration_feeds(bundle: Path, photos: Path, n: int) -> list[dict[str, np.ndarray]]:
    prior = Prior(bundle)
    paths = read_list(photos, "train.txt")
    step = max(1, len(paths) // n)
    feeds = []
    for path in paths[::step][:n]:
        hr = load_hr(path)
        h, w = hr.shape[:2]
        c = min(256, h, w) // 32 * 32
        y, x = (h - c) // 2, (w - c) // 2
        lr = bicubic_down(hr[y : y + c, x : x + c], SCALE)
        image = nchw(lr)
        feeds.append({"image": image, "ipr": prior(image)})
    return feeds


def excluded(bundle: Path, ends: bool) -> list[str]:
    """Nodes kept in float32: the LayerNorms' channel means (exported as 1x1 convolutions), and with `ends`
    the first convolution and the SR tail."""
    model = onnx.load(str(bundle / "backbone.onnx"))
    names = [n.name for n in model.graph.node if n.op_type == "Conv"]
    out = [n for n in names if n.endswith("/as_conv")]
    if ends:
        out += [n for n in names if "/patch_embed/" in n or "/tail" in n]
    return out


def quantize(bundle: Path, feeds: list[dict[str, np.ndarray]], out: Path, ends: bool) -> None:
    quantize_static(
        str(bundle / "backbone.onnx"),
        str(out),
        Reader(feeds),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["Conv", "MatMul"],
        nodes_to_exclude=excluded(bundle, ends),
    )


def quality(bundle: Path, int8: Path, photos: Path) -> list[tuple[str, float, float, float]]:
    """Per val photo: PSNR of the int8 output against the float32 output (float, [0, 1]); PSNR-Y of each
    against the ground truth."""
    prior = Prior(bundle)
    fp32, q8 = session(bundle / "backbone.onnx", 2), session(int8, 2)
    m = prior.meta["size_multiple"]
    rows = []
    for path in read_list(photos, "val.txt"):
        hr = mod_crop(load_hr(path), SCALE * m)
        lr = bicubic_down(hr, SCALE)
        image = nchw(lr)
        feed = {"image": image, "ipr": prior(image)}
        a, b = fp32.run(None, feed)[0], q8.run(None, feed)[0]
        a, b = np.clip(a, 0, 1), np.clip(b, 0, 1)
        mse = float(np.mean((a - b) ** 2))
        vs_fp32 = 10 * np.log10(1.0 / mse) if mse > 0 else float("inf")
        name, ya, yb = str(path.relative_to(photos)), psnr_y(u8(a), hr, SCALE), psnr_y(u8(b), hr, SCALE)
        rows.append((name, vs_fp32, ya, yb))
        print(f"  {name:<60} int8 vs fp32 {vs_fp32:6.2f} dB; PSNR-Y fp32 {ya:.2f}, int8 {yb:.2f}")
    return rows


def speed(bundle: Path, int8: Path, size: int, runs: int, threads: int) -> tuple[float, float]:
    meta = yaml.safe_load((bundle / "bundle.yaml").read_text())
    rng = np.random.default_rng(0)
    feed = {
        "image": rng.random((1, meta["input_channels"], size, size), dtype=np.float32),
        "ipr": rng.standard_normal((1, meta["ipr_dim"])).astype(np.float32),
    }
    sessions = [session(bundle / "backbone.onnx", threads), session(int8, threads)]
    for s in sessions:
        s.run(None, feed)
    times: list[list[float]] = [[], []]
    for _ in range(runs):
        for i, s in enumerate(sessions):
            t = time.perf_counter()
            s.run(None, feed)
            times[i].append(time.perf_counter() - t)
    return float(np.median(times[0])), float(np.median(times[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=Path, required=True)
    p.add_argument("--builtin", type=Path, default=REPO / "onnx" / "diffir-x4-small")
    p.add_argument("--speed-bundle", type=Path, help="a real-size bundle to time (e.g. realsr_x4)")
    p.add_argument("--calib", type=int, default=16)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path)
    p.add_argument("--keep-ends", action="store_true", help="also keep the first convolution and the tail in fp32")
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="diffir-int8-"))
    work.mkdir(parents=True, exist_ok=True)
    bundles = [("built-in", args.builtin)] + ([("speed", args.speed_bundle)] if args.speed_bundle else [])
    for name, bundle in bundles:
        int8 = work / f"{name}_backbone_int8{'_ends' if args.keep_ends else ''}.onnx"
        if not int8.exists():
            t = time.perf_counter()
            quantize(bundle, calibration_feeds(bundle, args.photos, args.calib), int8, args.keep_ends)
            print(f"{name}: quantised with {args.calib} calibration crops in {time.perf_counter() - t:.0f} s: {int8}")
        if name == "built-in":
            rows = quality(bundle, int8, args.photos)
            r = np.array([row[1:] for row in rows])
            print(f"built-in, {len(rows)} val photos: int8 vs fp32 mean {r[:, 0].mean():.2f} dB (min "
                  f"{r[:, 0].min():.2f}); PSNR-Y fp32 {r[:, 1].mean():.2f}, int8 {r[:, 2].mean():.2f} "
                  f"({r[:, 2].mean() - r[:, 1].mean():+.2f} dB)")  # fmt: skip
        fp32_s, int8_s = speed(bundle, int8, args.size, args.runs, args.threads)
        print(f"{name}: backbone at LR {args.size}, {args.threads} threads: fp32 {fp32_s:.3f} s, int8 {int8_s:.3f} s "
              f"({fp32_s / int8_s:.2f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
