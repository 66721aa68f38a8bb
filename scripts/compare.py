"""Side-by-side speed comparison: PyTorch eager, onnxruntime from Python, `diffir` on onnxruntime, `diffir` on
tract; the same weights, images and thread count, whole-image restores (prior + backbone), medians and ratios.

    python scripts/compare.py [--threads 2] [--sizes 64 128 256] [--runs 3] [--models realsr_x4 deblur builtin]

Models: random real-size weights for realsr_x4 and deblur_gopro (configs/), and the built-in model
(onnx/diffir-x4-small). Needs a release build of `diffir` (cargo build --release) and the exporter installed.
Prints a Markdown table (also written to --out) with the machine, threads and versions. The real-size models
are exported twice, with the export-time rewrites (the default, timed in every column) and plain (one more
`diffir` onnxruntime column, and the ratio of the two). There is no int8 column: the int8 mode was measured
(scripts/studies/int8_study.py) and not shipped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "export"))

from diffir_export import checkpoint  # noqa: E402
from diffir_export.arch import DiffIRS2  # noqa: E402
from diffir_export.config import ModelConfig  # noqa: E402
from diffir_export.onnx_export import export_bundle  # noqa: E402

BUILTIN = REPO / "onnx" / "diffir-x4-small"


def random_bundle(config: str, work: Path, optimize: bool = True) -> Path:
    """Export a model of the config with random (perturbed default) weights, once: with the export-time rewrites
    (the default export) or plain (`optimize=False`, for the plain-versus-optimised columns)."""
    out = work / (config if optimize else f"{config}-plain")
    ckpt = work / f"{config}.pth"
    if (out / "bundle.yaml").exists() and ckpt.exists():
        prov = yaml.safe_load((out / "bundle.yaml").read_text())["provenance"]
        if bool(prov.get("graph_rewrites")) == optimize:
            return out
    if not ckpt.exists():
        cfg = ModelConfig.load(REPO / "configs" / f"{config}.yaml")
        torch.manual_seed(0)
        model = DiffIRS2(cfg).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        torch.save({"params_ema": model.official_state_dict()}, ckpt)
    loaded, cfg, info = checkpoint.load(ckpt)
    prov = {"checkpoint_sha256": info.sha256}
    export_bundle(loaded, cfg.replace(name=config), out, prov, overwrite=True, log=lambda s: None, optimize=optimize)
    return out


def timed(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def torch_eager(model: DiffIRS2, x: torch.Tensor, noise: torch.Tensor, runs: int) -> tuple[float, float]:
    with torch.inference_mode():
        with FlopCounterMode(display=False) as fc:
            model(x, noise)
        flops = fc.get_total_flops()
        return timed(lambda: model(x, noise), runs), flops


def ort_python(bundle: Path, x: np.ndarray, noise: np.ndarray, threads: int, runs: int) -> float:
    meta = yaml.safe_load((bundle / "bundle.yaml").read_text())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3

    def sess(name):
        path = str(bundle / meta["graphs"][name]["file"])
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    cpen, den, bb = sess("cpen"), sess("denoiser"), sess("backbone")
    sched = meta["schedule"]
    c1, c2 = np.float32(sched["coef1"]), np.float32(sched["coef2"])

    def run():
        c = cpen.run(None, {"image": x})[0]
        z = noise
        for t in reversed(range(sched["timesteps"])):
            z0 = den.run(None, {"x": z, "t": np.array([t], dtype=np.int64), "condition": c})[0]
            z = c1[t] * z0 + c2[t] * z
        return bb.run(None, {"image": x, "ipr": z})[0]

    return timed(run, runs)


def diffir_bench(binary: Path, bundle: Path, backend: str, size: int, threads: int, runs: int) -> float:
    cmd = [str(binary), "bench", "--model", str(bundle), "--size", f"{size}x{size}", "--backend", backend,
           "--threads", str(threads), "--tile", "0", "--runs", str(runs)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(re.search(r"median: ([0-9.]+) ms", out).group(1))


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--models", nargs="+", default=["realsr_x4", "deblur_gopro", "builtin"])
    p.add_argument("--binary", type=Path, default=REPO / "target" / "release" / "diffir")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "diffir-compare")
    p.add_argument("--out", type=Path, help="also write the Markdown table here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    lines = [
        f"machine: {machine()}; threads: {args.threads}; torch {torch.__version__}, onnxruntime {ort.__version__}, "
        f"diffir {commit.strip()}; median of {args.runs} runs after one warm-up; whole-image restores",
        "",
        "| model | LR size | PyTorch eager ms | ORT Python ms | diffir ort ms | diffir tract ms |"
        " speed-up ORT-Py vs PyTorch | speed-up diffir-ort vs PyTorch | time diffir-ort / ORT-Py |"
        " time tract / diffir-ort | GFLOP | diffir-ort GFLOP/s | diffir ort, plain graph ms |"
        " time optimised / plain |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for name in args.models:
        bundle = BUILTIN if name == "builtin" else random_bundle(name, args.work)
        # The built-in model's checkpoint is not in the repository, so it has no plain export to time.
        plain = None if name == "builtin" else random_bundle(name, args.work, optimize=False)
        meta = yaml.safe_load((bundle / "bundle.yaml").read_text())
        if name == "builtin":
            # The bundle holds no PyTorch checkpoint; speed does not depend on the weights' values.
            torch.manual_seed(0)
            model = DiffIRS2(ModelConfig.from_dict(meta["model"])).eval()
        else:
            model, _, _ = checkpoint.load(args.work / f"{name}.pth")
        for size in args.sizes:
            c = meta["input_channels"]
            x = np.random.default_rng(size).random((1, c, size, size), dtype=np.float32)
            noise = np.random.default_rng(1).standard_normal((1, meta["ipr_dim"])).astype(np.float32)
            pt, flops = torch_eager(model, torch.from_numpy(x), torch.from_numpy(noise), args.runs)
            op = ort_python(bundle, x, noise, args.threads, args.runs)
            do = diffir_bench(args.binary, bundle, "ort-cpu", size, args.threads, args.runs)
            dt = diffir_bench(args.binary, bundle, "tract", size, args.threads, args.runs)
            dp = diffir_bench(args.binary, plain, "ort-cpu", size, args.threads, args.runs) if plain else None
            row = (
                f"| {name} | {size} | {pt:.0f} | {op:.0f} | {do:.0f} | {dt:.0f} | {pt / op:.2f}× | "
                f"{pt / do:.2f}× | {do / op:.3f} | {dt / do:.2f} | {flops / 1e9:.1f} | "
                f"{flops / 1e9 / (do / 1e3):.1f} | {f'{dp:.0f}' if dp else '—'} | "
                f"{f'{do / dp:.3f}' if dp else '—'} |"
            )
            lines.append(row)
            print(row, flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
