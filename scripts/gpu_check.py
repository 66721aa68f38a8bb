"""GPU check of the runtime: parity of `diffir` on onnxruntime CUDA against its CPU result, fp16 against fp32,
one side-by-side speed table, and the throughput of a large x4 restore.

On a GPU machine with onnxruntime-gpu's library on ORT_DYLIB_PATH (scripts/gpu-check.sh runs this):

    python3 scripts/gpu_check.py --bundle BUNDLE --binary target/release/diffir [--device cuda] [--logs DIR]

1. A real-size realsr_x4 bundle with random weights and its fp16 backbone is exported to BUNDLE unless one is
   there (speed does not depend on weight values).
2. Parity at LR 64: diffir fp32 on CUDA against diffir on the onnxruntime CPU provider (max |diff| <= 1e-4),
   whole-image (the dynamic session) and on the bound fixed-shape path (--tile 64 --tile-batch 4 on a
   160x160 input, with and without --cuda-graph); diffir fp16 against diffir fp32 on CUDA (PSNR >= 45 dB).
3. The table, LR 64/128/256, one tile of the whole image, backbone only, median of --runs after warm-up:
   PyTorch eager fp32 (its defaults, TF32 convolutions on), PyTorch fp16 autocast, diffir fp32, diffir fp16.
4. A 2048x2048 -> 8192x8192 x4 restore with diffir's default tiling on one GPU (output megapixels per second,
   whole restore), the tile and batch `--tile auto` chose, the peak device memory nvidia-smi reported while
   it ran (sampled every 0.2 s), and PyTorch eager running the same tiles one at a time (backbone only).

Every diffir call's command line, stdout and stderr are saved under --logs (one numbered file each).

`--device cpu` runs the same steps on the CPU (ort-cpu) with small sizes, to check the script itself.
"""

from __future__ import annotations

import argparse
import math
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "export"))
from diffir_export.arch import DiffIRS2  # noqa: E402
from diffir_export.config import ModelConfig  # noqa: E402

FP32_PARITY = 1e-4
FP16_MIN_PSNR = 45.0


def export_bundle_if_missing(path: Path) -> None:
    from export_random import export_random  # scripts/, beside this file

    export_random(ROOT / "configs" / "realsr_x4.yaml", path, fp16=True)


def torch_ms(model: DiffIRS2, size: int, device: str, runs: int, fp16: bool) -> float:
    x = torch.rand(1, 3, size, size, device=device)
    ipr = torch.rand(1, model.cfg.ipr_dim, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []
    with torch.inference_mode(), torch.autocast(device, dtype=torch.float16, enabled=fp16):
        for i in range(runs + 3):
            sync()
            t = time.perf_counter()
            model.G(x, ipr)
            sync()
            if i >= 3:  # warm-up: cuDNN algorithm search
                times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


LOGS: Path | None = None
CALLS = 0


def run(cmd: list[str]) -> subprocess.CompletedProcess | None:
    """Run a diffir command; its command line, stdout and stderr go to a numbered file under LOGS."""
    global CALLS
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    CALLS += 1
    if LOGS is not None:
        name = f"{CALLS:02d}-{cmd[1]}.log"
        (LOGS / name).write_text(
            f"$ {' '.join(cmd)}\n# exit {r.returncode}\n## stdout\n{r.stdout}\n## stderr\n{r.stderr}"
        )
    if r.returncode != 0:
        last = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else str(r.returncode)
        print(f"  failed: {' '.join(cmd[1:4])}…: {last}", flush=True)
        return None
    return r


class MemorySampler:
    """The largest `nvidia-smi --query-gpu=memory.used` of device 0 while it runs (sampled every 0.2 s)."""

    def __enter__(self):  # noqa: ANN204
        import threading

        self.peak_mib = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.is_set():
            q = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"]
            try:
                r = subprocess.run(q, capture_output=True, text=True, check=False)
            except OSError:  # no nvidia-smi (the CPU mode): nothing to sample
                return
            if r.returncode == 0 and r.stdout.strip().isdigit():
                self.peak_mib = max(self.peak_mib, int(r.stdout.strip()))
            self.stop.wait(0.2)

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def bench(binary: str, bundle: str, backend: str, size: int, runs: int, extra: list[str]) -> tuple[float, str] | None:
    """(backbone ms, stderr) of `diffir bench` on one tile of the whole image."""
    r = run([binary, "bench", "--model", bundle, "--backend", backend, "--size", f"{size}x{size}",
             "--runs", str(runs), "--tile", str(size), *extra])  # fmt: skip
    if r is None:
        return None
    return float(re.search(r"backbone:\s+([0-9.]+) ms", r.stdout).group(1)), r.stderr


def restore(binary: str, bundle: str, backend: str, img: Path, out: Path, extra: list[str]) -> np.ndarray | None:
    r = run([binary, "restore", str(img), "-o", str(out), "--model", bundle, "--backend", backend, *extra])
    return None if r is None else np.load(out)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def tiles(length: int, tile: int, overlap: int) -> int:
    """How many tiles diffir's plan puts along one axis (steps of tile - overlap, the last shifted inward)."""
    if tile >= length:
        return 1
    return math.ceil((length - tile) / (tile - overlap)) + 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="/tmp/realsr_x4-random")
    p.add_argument("--binary", default="target/release/diffir")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--sizes", type=int, nargs="+")
    p.add_argument("--big", type=int, help="input side of the throughput run (default 2048; 128 on the CPU)")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--cuda-option", action="append", default=[], help="KEY=VALUE passed to diffir")
    p.add_argument("--logs", type=Path, help="folder for every diffir call's command line, stdout and stderr")
    args = p.parse_args()
    global LOGS
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
        LOGS = args.logs
    gpu = args.device == "cuda"
    sizes = args.sizes or ([64, 128, 256] if gpu else [32, 64])
    big = args.big or (2048 if gpu else 128)
    bundle = Path(args.bundle)
    export_bundle_if_missing(bundle)
    meta = yaml.safe_load((bundle / "bundle.yaml").read_text())
    torch.manual_seed(0)
    model = DiffIRS2(ModelConfig.from_dict(meta["model"])).eval().to(args.device)
    backend = "ort-cuda" if gpu else "ort-cpu"
    extra = [x for o in args.cuda_option for x in ("--cuda-option", o)] if gpu else []
    name = torch.cuda.get_device_name() if gpu else "CPU"
    print(f"device: {name}; model {meta['name']}; median of {args.runs} runs after warm-up", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        img = Path(tmp, "in.npy")
        np.save(img, np.random.default_rng(0).random((64, 64, 3), dtype=np.float32))
        whole = ["--tile", "0", *extra]
        cpu = "ort-cpu" if gpu else "tract"
        ref = restore(args.binary, str(bundle), cpu, img, Path(tmp, "ref.npy"), ["--tile", "0"])
        f32 = restore(args.binary, str(bundle), backend, img, Path(tmp, "f32.npy"), whole)
        f16 = restore(args.binary, str(bundle), backend, img, Path(tmp, "f16.npy"), [*whole, "--precision", "fp16"])
        # The bound fixed-shape path: 4 tiles of 64 per call (the last batch padded), with and without a graph.
        big_img = Path(tmp, "in160.npy")
        np.save(big_img, np.random.default_rng(1).random((160, 160, 3), dtype=np.float32))
        bound = ["--tile", "64", "--tile-batch", "4"]
        bound_ref = restore(args.binary, str(bundle), cpu, big_img, Path(tmp, "bref.npy"), bound)
        bound_runs = {
            label: restore(args.binary, str(bundle), backend, big_img, Path(tmp, f"b{i}.npy"), [*bound, *flags, *extra])
            for i, (label, flags) in enumerate(
                [("bound", []), *([("bound + CUDA graph", ["--cuda-graph"])] if gpu else [])]
            )
        }
    if ref is not None and f32 is not None:
        d = float(np.abs(ref - f32).max())
        print(f"parity fp32 {backend} vs CPU at LR 64: max |diff| {d:.2e} ({'ok' if d <= FP32_PARITY else 'FAIL'})")
    for label, got in bound_runs.items():
        if bound_ref is not None and got is not None:
            d = float(np.abs(bound_ref - got).max())
            ok = "ok" if d <= FP32_PARITY else "FAIL"
            print(f"parity fp32 {backend} vs CPU, LR 160, tile 64 x 4 per batch, {label}: max |diff| {d:.2e} ({ok})")
        else:
            print(f"parity fp32 {backend}, tile 64 x 4 per batch, {label}: FAIL (the run failed; see the logs)")
    if f32 is not None and f16 is not None:
        q = psnr(f16, f32)
        print(f"parity fp16 vs fp32 at LR 64: {q:.1f} dB PSNR ({'ok' if q >= FP16_MIN_PSNR else 'FAIL'})")

    print("\n| LR | PyTorch fp32 ms | PyTorch fp16 autocast ms | diffir fp32 ms (x) | diffir fp16 ms (x) |")
    print("|---|---|---|---|---|")
    for size in sizes:
        pt32 = torch_ms(model, size, args.device, args.runs, False)
        pt16 = torch_ms(model, size, args.device, args.runs, True) if gpu else float("nan")
        cells = []
        for prec in ("fp32", "fp16"):
            r = bench(args.binary, str(bundle), backend, size, args.runs, [*extra, "--precision", prec])
            cells.append("n/a" if r is None else f"{r[0]:.1f} ({pt32 / r[0]:.2f}x faster)")
        print(f"| {size} | {pt32:.1f} | {pt16:.1f} | {cells[0]} | {cells[1]} |", flush=True)

    # Throughput: the whole restore with default tiling, against PyTorch running the same tiles one by one.
    out_mp = (big * meta["scale"]) ** 2 / 1e6
    for prec in ("fp32", "fp16"):
        with MemorySampler() as mem:
            r = run([args.binary, "bench", "--model", str(bundle), "--backend", backend, "--size", f"{big}x{big}",
                     "--runs", "1", "--precision", prec, *extra])  # fmt: skip
        if r is None:
            continue
        total = float(re.search(r"median:\s+([0-9.]+) ms", r.stdout).group(1)) / 1e3
        plan = re.search(r"tile (\d+), (\d+) tile\(s\) per batch", r.stdout + r.stderr)
        chosen = f"tile {plan.group(1)} x {plan.group(2)} per batch" if plan else "tile ?"
        peak = f"{mem.peak_mib} MiB" if gpu else "n/a"
        print(f"\n{big}x{big} -> x{meta['scale']}, diffir {prec}: {total:.2f} s, {out_mp / total:.1f} MP/s; "
              f"--tile auto chose {chosen}; peak device memory {peak}"
              f" (plan: {r.stderr.strip().splitlines()[0] if r.stderr.strip() else '?'})")  # fmt: skip
        if prec == "fp32" and plan:
            tile = int(plan.group(1))
            n = tiles(big, tile, 16) ** 2
            x = torch.rand(1, 3, tile, tile, device=args.device)
            ipr = torch.rand(1, model.cfg.ipr_dim, device=args.device)
            sync = torch.cuda.synchronize if gpu else (lambda: None)
            with torch.inference_mode():
                model.G(x, ipr)
                sync()
                t = time.perf_counter()
                for _ in range(n):
                    model.G(x, ipr)
                sync()
            pt = time.perf_counter() - t
            print(f"PyTorch eager fp32, the same {n} tiles of {tile} one at a time: {pt:.2f} s, {out_mp / pt:.1f} MP/s;"
                  f" diffir fp32 is {pt / total:.2f}x its throughput")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
