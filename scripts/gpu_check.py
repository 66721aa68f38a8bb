"""GPU check: parity of `diffir` on onnxruntime CUDA (and TensorRT where libnvinfer exists) against its CPU
result, and speed of PyTorch eager vs onnxruntime on the real-size realsr_x4 backbone at LR 64, 128, 256.

On the GPU machine (onnxruntime-gpu staged as ../shared/device/prepare-ort-gpu.sh describes, so that
ORT_DYLIB_PATH and LD_LIBRARY_PATH are set; a release `diffir` and a realsr_x4 bundle carried along):

    python3 scripts/gpu_check.py --bundle BUNDLE --binary target/release/diffir [--device cuda]

`--device cpu` runs the same steps on the CPU (PyTorch on CPU, the ort-cpu backend) to check the script.
PyTorch uses the bundle's architecture with random weights (speed does not depend on weight values).
"""

from __future__ import annotations

import argparse
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


def diffir_backbone_ms(binary: str, bundle: str, backend: str, size: int, runs: int) -> float | None:
    cmd = [binary, "bench", "--model", bundle, "--backend", backend, "--size", f"{size}x{size}", "--tile", "0",
           "--runs", str(runs)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"  {backend}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
        return None
    return float(re.search(r"backbone:\s+([0-9.]+) ms", r.stdout).group(1))


def parity(binary: str, bundle: str, backend: str, size: int) -> float | None:
    with tempfile.TemporaryDirectory() as tmp:
        img = np.random.default_rng(0).random((size, size, 3), dtype=np.float32)
        np.save(f"{tmp}/in.npy", img)
        outs = []
        reference = "tract" if backend == "ort-cpu" else "ort-cpu"
        for i, be in enumerate((reference, backend)):
            r = subprocess.run([binary, "restore", f"{tmp}/in.npy", "-o", f"{tmp}/{i}.npy", "--model", bundle,
                                "--backend", be, "--tile", "0"], capture_output=True, text=True)  # fmt: skip
            if r.returncode != 0:
                return None
            outs.append(np.load(f"{tmp}/{i}.npy"))
        return float(np.abs(outs[0] - outs[1]).max())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True)
    p.add_argument("--binary", default="target/release/diffir")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--runs", type=int, default=10)
    args = p.parse_args()
    meta = yaml.safe_load(Path(args.bundle, "bundle.yaml").read_text())
    torch.manual_seed(0)
    model = DiffIRS2(ModelConfig.from_dict(meta["model"])).eval().to(args.device)
    backends = ["ort-cuda", "ort-tensorrt"] if args.device == "cuda" else ["ort-cpu"]
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"device: {name}; model {meta['name']}; median of {args.runs} runs after warm-up\n")
    for be in backends:
        d = parity(args.binary, args.bundle, be, 64)
        print(f"parity {be} vs the CPU result at LR 64: " + ("unavailable" if d is None else f"max |diff| = {d:.2e}"))
    print("\n| LR | PyTorch eager ms | " + " | ".join(f"{b} ms | {b} / PyTorch" for b in backends) + " |")
    print("|---|---|" + "---|---|" * len(backends))
    for size in args.sizes:
        pt = torch_backbone_ms(model, size, args.device, args.runs)
        cells = []
        for be in backends:
            ms = diffir_backbone_ms(args.binary, args.bundle, be, size, args.runs)
            cells.append("n/a | n/a" if ms is None else f"{ms:.1f} | {ms / pt:.2f}")
        print(f"| {size} | {pt:.1f} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
