"""GPU check: parity of `diffir` on onnxruntime CUDA (and TensorRT where libnvinfer exists) against its CPU
result, and speed of PyTorch eager vs onnxruntime on the real-size realsr_x4 backbone at LR 64, 128, 256.

On a GPU machine with onnxruntime-gpu's library on ORT_DYLIB_PATH (scripts/gpu-check.sh runs this after
exporting a realsr_x4 bundle):

    python3 scripts/gpu_check.py --bundle BUNDLE --binary target/release/diffir [--device cuda]

`--device cpu` runs the same steps on the CPU (PyTorch on CPU, the ort-cpu backend) to check the script.
PyTorch uses the bundle's architecture with random weights (speed does not depend on weight values).
"""

from __future__ import annotations

import argparse
import ctypes.util
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
from diffir_export.arch import DiffIRS2  # noqa: E402
from diffir_export.config import ModelConfig  # noqa: E402


def torch_backbone_ms(model: DiffIRS2, size: int, device: str, runs: int) -> float:
    x = torch.rand(1, 3, size, size, device=device)
    ipr = torch.rand(1, model.cfg.ipr_dim, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode():
        for i in range(runs + 3):
            sync()
            t = time.perf_counter()
            model.G(x, ipr)
            sync()
            if i >= 3:  # warm-up: cuDNN algorithm search
                times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def engine_flags(backend: str, size: int, cuda_options: list[str]) -> list[str]:
    """One tile of the whole image, so GPU providers plan for its static shape."""
    flags = ["--backend", backend, "--tile", str(size)]
    for o in cuda_options if backend != "ort-cpu" else []:
        flags += ["--cuda-option", o]
    return flags


def diffir_backbone_ms(binary: str, bundle: str, backend: str, size: int, runs: int, cuda_options) -> float | None:
    cmd = [binary, "bench", "--model", bundle, "--size", f"{size}x{size}", "--runs", str(runs),
           *engine_flags(backend, size, cuda_options)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"  {backend}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
        return None
    return float(re.search(r"backbone:\s+([0-9.]+) ms", r.stdout).group(1))


def parity(binary: str, bundle: str, backend: str, size: int, cuda_options) -> float | None:
    with tempfile.TemporaryDirectory() as tmp:
        img = np.random.default_rng(0).random((size, size, 3), dtype=np.float32)
        np.save(f"{tmp}/in.npy", img)
        outs = []
        reference = "tract" if backend == "ort-cpu" else "ort-cpu"
        for i, be in enumerate((reference, backend)):
            r = subprocess.run([binary, "restore", f"{tmp}/in.npy", "-o", f"{tmp}/{i}.npy", "--model", bundle,
                                *engine_flags(be, size, cuda_options)], capture_output=True, text=True)  # fmt: skip
            if r.returncode != 0:
                print(f"  {be}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
                return None
            outs.append(np.load(f"{tmp}/{i}.npy"))
        return float(np.abs(outs[0] - outs[1]).max())


def has_tensorrt() -> bool:
    if ctypes.util.find_library("nvinfer"):
        return True
    dirs = os.environ.get("LD_LIBRARY_PATH", "").split(":")
    return any(Path(d).is_dir() and any(Path(d).glob("libnvinfer.so*")) for d in dirs if d)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True)
    p.add_argument("--binary", default="target/release/diffir")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--cuda-option", action="append", default=[], help="KEY=VALUE passed to diffir")
    args = p.parse_args()
    meta = yaml.safe_load(Path(args.bundle, "bundle.yaml").read_text())
    torch.manual_seed(0)
    model = DiffIRS2(ModelConfig.from_dict(meta["model"])).eval().to(args.device)
    backends = ["ort-cuda"] if args.device == "cuda" else ["ort-cpu"]
    if args.device == "cuda" and has_tensorrt():
        backends.append("ort-tensorrt")
    elif args.device == "cuda":
        print("TensorRT: libnvinfer not found, not timed")
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"device: {name}; model {meta['name']}; median of {args.runs} runs after warm-up; "
          f"diffir options: {' '.join(args.cuda_option) or 'defaults'}\n")  # fmt: skip
    print("\n| LR | PyTorch eager ms | " + " | ".join(f"{b} ms | {b} / PyTorch" for b in backends) + " |")
    print("|---|---|" + "---|---|" * len(backends))
    for size in args.sizes:
        pt = torch_backbone_ms(model, size, args.device, args.runs)
        cells = []
        for be in backends:
            ms = diffir_backbone_ms(args.binary, args.bundle, be, size, args.runs, args.cuda_option)
            cells.append("n/a | n/a" if ms is None else f"{ms:.1f} | {ms / pt:.2f}")
        print(f"| {size} | {pt:.1f} | " + " | ".join(cells) + " |", flush=True)
    print()
    for be in backends:
        d = parity(args.binary, args.bundle, be, 64, args.cuda_option)
        print(f"parity {be} vs the CPU result at LR 64: " + ("unavailable" if d is None else f"max |diff| = {d:.2e}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
