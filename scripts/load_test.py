"""Bounded load test of `diffir serve` on loopback: starts the server (port chosen by the OS), sends N restore
requests with C in flight at a time, prints latency percentiles and throughput, then stops the server.

    python3 scripts/load_test.py --binary target/release/diffir [--requests 300] [--concurrency 8] [--size 256]
        [-- extra `diffir serve` flags]

The input is a deterministic textured RGB PNG of SIZE x SIZE; the model is the server's default (the
built-in one) unless serve flags say otherwise. Only 127.0.0.1 is contacted; the run ends by itself.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image


def test_image(size: int) -> bytes:
    y, x = np.mgrid[0:size, 0:size]
    rgb = np.stack([(x * 7 + y * 3) % 256, (x * y) % 251, ((x ^ y) * 5) % 256], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def percentile(sorted_values: list[float], q: float) -> float:
    k = (len(sorted_values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default="target/release/diffir")
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--timeout", type=float, default=600, help="seconds per request")
    p.add_argument("serve_args", nargs="*", help="extra `diffir serve` flags (after --)")
    args = p.parse_args()

    server = subprocess.Popen(
        [args.binary, "serve", "--listen", "127.0.0.1:0", *args.serve_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = server.stdout.readline().strip()
        if not line.startswith("listening on "):
            print(f"the server did not start: {line!r}", file=sys.stderr)
            return 1
        base = line.removeprefix("listening on ")
        models = json.load(urllib.request.urlopen(f"{base}/v1/models", timeout=10))["models"]
        model = models[0]
        body = test_image(args.size)

        def one(_: int) -> tuple[int, float]:
            req = urllib.request.Request(f"{base}/v1/models/{model['name']}/restore", data=body, method="POST")
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=args.timeout) as r:
                    r.read()
                    code = r.status
            except urllib.error.HTTPError as e:
                code = e.code
            return code, time.perf_counter() - t

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            results = list(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=120)

    codes: dict[int, int] = {}
    for code, _ in results:
        codes[code] = codes.get(code, 0) + 1
    ok = sorted(t for code, t in results if code == 200)
    print(f"model {model['name']} ({model['backend']})")
    print(f"{args.requests} requests of {args.size}x{args.size}, {args.concurrency} in flight: status codes {codes}")
    if ok:
        print(
            f"latency p50 {percentile(ok, 0.5):.2f} s, p95 {percentile(ok, 0.95):.2f} s, "
            f"p99 {percentile(ok, 0.99):.2f} s, mean {statistics.mean(ok):.2f} s"
        )
    print(f"throughput {len(ok) / wall:.2f} requests/s ({wall:.1f} s in all)")
    return 0 if len(ok) == args.requests else 1


if __name__ == "__main__":
    sys.exit(main())
