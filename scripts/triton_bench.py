"""Remote (Triton) vs local restore time for one model on this machine, CPU on both sides.

  python scripts/triton_bench.py --binary target/release/diffir [--size 1024] [--runs 3] [--threads 2]

Writes a Triton repository for the model (`diffir triton-repo --cpu`), serves it with nvidia-pytriton's
tritonserver through the test-only Python-backend shim (onnxruntime CPU, the same ONNX files), then times
`diffir restore` on one synthetic photo-like image locally (onnxruntime CPU) and remotely, interleaved, at
the same thread count: locally N workers x 1 thread; remotely N model instances x 1 thread each. Prints one
line per run, the medians, and the batch sizes the server formed (its statistics API).
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
TOOL = [sys.executable, str(ROOT / "scripts" / "triton_tool.py")]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def photo(size, path):
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(7 * x + 3 * y), np.cos(5 * y - 2 * x), np.sin(11 * x * y)], -1) * 0.35 + 0.5
    img = np.clip(base + rng.normal(0, 0.03, base.shape), 0, 1)
    Image.fromarray((img * 255).astype(np.uint8)).save(path)


def timed(cmd):
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "diffir"))
    ap.add_argument("--model", help="bundle folder (default: the built-in model)")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tile", type=int, default=128)
    ap.add_argument("--tile-batch", type=int, default=1)
    args = ap.parse_args()
    model = ["--model", args.model] if args.model else []
    work = Path(tempfile.mkdtemp(prefix="diffir-triton-bench-"))
    repo = work / "repo"
    subprocess.run(
        [
            args.binary,
            "triton-repo",
            *model,
            "-o",
            str(repo),
            "--cpu",
            "--instances",
            str(args.threads),
            "--tile",
            str(args.tile),
            "--name",
            "bench",
        ],
        check=True,
    )
    binary = subprocess.run([*TOOL, "server"], check=True, capture_output=True, text=True).stdout.strip()
    shim = work / "shim"
    subprocess.run([*TOOL, "shim", str(repo), str(shim)], check=True, capture_output=True)
    port = free_port()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", DIFFIR_SHIM_THREADS="1")
    log = (work / "tritonserver.log").open("w")  # noqa: SIM115 (kept open for the server's lifetime)
    server = subprocess.Popen(
        [
            binary,
            "--model-repository",
            str(shim),
            "--backend-directory",
            str(Path(binary).parent.parent / "backends"),
            "--grpc-address",
            "127.0.0.1",
            "--grpc-port",
            str(port),
            "--allow-http",
            "false",
            "--allow-metrics",
            "false",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.time() + 120
        while "Started GRPCInferenceService" not in (work / "tritonserver.log").read_text():
            if server.poll() is not None or time.time() > deadline:
                sys.exit("tritonserver did not start:\n" + (work / "tritonserver.log").read_text())
            time.sleep(0.2)
        image = work / "input.png"
        photo(args.size, image)
        common = [
            args.binary,
            "restore",
            str(image),
            *model,
            "--overwrite",
            "-q",
            "--tile",
            str(args.tile),
            "--tile-batch",
            str(args.tile_batch),
        ]
        local = [*common, "-o", str(work / "local.png"), "--backend", "ort-cpu", "--threads", str(args.threads)]
        remote = [
            *common,
            "-o",
            str(work / "remote.png"),
            "--triton-url",
            f"grpc://127.0.0.1:{port}",
            "--triton-model",
            "bench",
            "--workers",
            str(2 * args.threads),
        ]
        timed(local)
        timed(remote)  # warm-up: first sessions, first connection
        times = {"local": [], "remote": []}
        for i in range(args.runs):
            for name, cmd in (("local", local), ("remote", remote)):
                t = timed(cmd)
                times[name].append(t)
                print(f"run {i + 1} {name}: {t:.2f} s", flush=True)
        a = np.asarray(Image.open(work / "local.png"), dtype=np.int16)
        b = np.asarray(Image.open(work / "remote.png"), dtype=np.int16)
        lm, rm = statistics.median(times["local"]), statistics.median(times["remote"])
        print(
            f"median local {lm:.2f} s, remote {rm:.2f} s, remote/local {rm / lm:.2f}; "
            f"outputs differ by at most {int(np.abs(a - b).max())} (8-bit)"
        )
        for m in ("bench_prior", "bench_backbone"):
            stats = subprocess.run([*TOOL, "stats", f"127.0.0.1:{port}", m], capture_output=True, text=True)
            print(stats.stdout.strip())
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
