#!/usr/bin/env python3
"""Replay what a hostile client and a hostile input folder try against `diffir serve` and `diffir restore`
on loopback, each case bounded in time, and print a Markdown table (the README's reliability section).

    python scripts/abuse.py --binary target/debug/diffir [--bundle tests/fixtures/bundles/sr_x4]

Exits 1 if any case fails. Run by scripts/test.sh.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from abuse_video import batch_and_repo_cases, video_cases
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


class Server:
    def __init__(self, binary: str, bundle: str, *extra: str):
        self.log: list[str] = []
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--model", f"sr={bundle}", "--backend", "tract"]
            + ["--threads", "1", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        m = re.match(r"listening on http://([\d.]+):(\d+)", line)
        if not m:
            raise RuntimeError(f"server did not start: {line!r}")
        self.addr = (m.group(1), int(m.group(2)))
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()

    def connect(self, timeout: float = 20.0) -> socket.socket:
        s = socket.create_connection(self.addr, timeout=timeout)
        return s

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def answer(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    f = s.makefile("rb")
    status = f.readline().decode()
    code = int(status.split(" ")[1])
    headers = {}
    while True:
        line = f.readline().decode().strip()
        if not line:
            break
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    body = f.read(int(headers.get("content-length", "0")))
    return code, headers, body


def request(srv: Server, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    with srv.connect() as s:
        s.sendall(head.encode() + body)
        return answer(s)


def post(path: str, length: int, ctype: str = "image/png", extra: str = "") -> str:
    return f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {ctype}\r\nContent-Length: {length}\r\n{extra}\r\n"


def closed_within(s: socket.socket, limit: float) -> bool:
    s.settimeout(limit)
    try:
        while s.recv(1024):
            pass
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


def png_bytes(w: int, h: int, **save) -> bytes:
    img = Image.new("RGB", (w, h))
    img.putdata([((x * 7) % 256, (y * 3) % 256, (x ^ y) % 256) for y in range(h) for x in range(w)])
    buf = io.BytesIO()
    img.save(buf, format="PNG", **save)
    return buf.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=str(ROOT / "target/debug/diffir"))
    ap.add_argument("--bundle", default=str(ROOT / "tests/fixtures/bundles/sr_x4"))
    args = ap.parse_args()
    rows: list[tuple[str, str, str, float, bool]] = []

    def case(name: str, expected: str):
        def wrap(fn):
            start = time.monotonic()
            try:
                got, ok = fn()
            except Exception as e:  # a case that raises has failed; the table says how
                got, ok = f"{type(e).__name__}: {e}", False
            rows.append((name, expected, got, (time.monotonic() - start) * 1e3, ok))
            return fn

        return wrap

    small = png_bytes(24, 20)
    srv = Server(args.binary, args.bundle, "--header-timeout", "1", "--body-timeout", "1", "--max-body-bytes", "100000")
    try:

        @case("partial headers (slow loris)", "closed after --header-timeout 1 s")
        def _():
            s = srv.connect()
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
            ok = closed_within(s, 5)
            return ("closed" if ok else "still open"), ok

        @case("idle connection", "closed after --header-timeout 1 s")
        def _():
            ok = closed_within(srv.connect(), 5)
            return ("closed" if ok else "still open"), ok

        @case("body stops arriving", "408 after --body-timeout 1 s")
        def _():
            with srv.connect() as s:
                s.sendall(post("/v1/models/sr/restore", 5000).encode() + b"x" * 10)
                code = answer(s)[0]
            return str(code), code == 408

        for route, ctype in [
            ("/v1/models/sr/restore", "image/png"),
            ("/v1/models/sr/restore", "multipart/form-data; boundary=x"),
            ("/v2/models/sr/infer", "application/json"),
        ]:

            @case(f"Content-Length 5 GB, {route} ({ctype.split(';')[0]})", "413 from the headers, route's format")
            def _(route=route, ctype=ctype):
                code, headers, body = request(srv, post(route, 5_000_000_000, ctype))
                want_json = route.startswith("/v2")
                is_json = headers.get("content-type", "").startswith("application/json")
                return f"{code}, {headers.get('content-type')}", code == 413 and is_json == want_json

        @case("chunked body over the limit", "413")
        def _():
            head = "POST /v1/models/sr/restore HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            code = request(srv, head, f"{150000:x}\r\n".encode() + b"a" * 150000 + b"\r\n")[0]
            return str(code), code == 413

        @case("ICC profile expanding to 64 MiB in a small PNG", "dropped, note header, small response")
        def _():
            bomb = png_bytes(24, 20, icc_profile=b"\0" * (64 << 20))
            code, headers, body = request(srv, post("/v1/models/sr/restore", len(bomb)), bomb)
            note = headers.get("x-diffir-note", "")
            ok = code == 200 and "ICC" in note and len(body) < 100_000
            return f"{code}, {len(bomb)} B in, {len(body)} B out", ok

        for q, want in [("tile=0", 400), ("tile=1", 400), ("tile=64", 200), ("seed=99999999999999999999", 400)]:

            @case(f"?{q}", str(want))
            def _(q=q, want=want):
                code = request(srv, post(f"/v1/models/sr/restore?{q}", len(small)), small)[0]
                return str(code), code == want

        @case("duplicate multipart part", "400")
        def _():
            part = b'--x\r\nContent-Disposition: form-data; name="image"\r\n\r\n' + small + b"\r\n"
            body = part + part + b"--x--\r\n"
            code = request(srv, post("/v1/models/sr/restore", len(body), "multipart/form-data; boundary=x"), body)[0]
            return str(code), code == 400

        b64 = base64.b64encode(small).decode()

        def infer(doc: dict) -> tuple[int, bytes]:
            body = json.dumps(doc).encode()
            code, _, out = request(srv, post("/v2/models/sr/infer", len(body), "application/json"), body)
            return code, out

        image_input = {"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]}

        @case("duplicate KServe input", "400")
        def _():
            code, _ = infer({"inputs": [image_input, image_input]})
            return str(code), code == 400

        @case("KServe tile as a string, an unknown requested output", "200 (as a seed string is); 400 naming it")
        def _():
            a, _ = infer({"inputs": [image_input], "parameters": {"tile": "64", "seed": "3"}})
            b, out = infer({"inputs": [image_input], "outputs": [{"name": "mask"}]})
            return f"{a}, {b}", a == 200 and b == 400 and b"unknown output 'mask'" in out

        @case("Expect: 100-continue with a bad query", "400 at once, no 100 Continue first")
        def _():
            head = post("/v1/models/sr/restore?tile=abc", 1000, extra="Expect: 100-continue\r\n")
            code = request(srv, head)[0]
            return str(code), code == 400

        @case("KServe binary data extension", "400 naming it")
        def _():
            code, out = infer({"inputs": [{**image_input, "parameters": {"binary_data_size": 3}}]})
            return str(code), code == 400 and b"binary data extension" in out

        @case("KServe seed 1e20", "400, a range message")
        def _():
            code, out = infer({"inputs": [image_input], "parameters": {"seed": 1e20}})
            return str(code), code == 400 and b"0 to 18446744073709551615" in out

        for path in ["/v2", "/v2/models/sr/ready", "/v2/models/sr/versions/1", "/v2/models/sr/versions/1/ready"]:

            @case(f"GET {path}", "200")
            def _(path=path):
                code = request(srv, f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")[0]
                return str(code), code == 200

        @case("NUL and newline in a query value", "escaped in the answer")
        def _():
            code, _, out = request(srv, post("/v1/models/sr/restore?format=a%00b%0Ac", len(small)), small)
            return f"{code}, {out[:40]!r}", code == 400 and b"\0" not in out and b"\\x00" in out

        @case("24 image shapes on tract", "plan cache stays at 16")
        def _():
            for k in range(24):
                img = png_bytes(16 + 8 * (k // 2), 16 + 8 * (k % 2))
                request(srv, post("/v1/models/sr/restore", len(img)), img)
            _, _, m = request(srv, "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            n = re.search(rb"diffir_cached_plans\{[^}]*\} (\d+)", m)
            got = int(n.group(1)) if n else -1
            return str(got), got == 16
    finally:
        srv.close()

    srv = Server(args.binary, args.bundle, "--max-connections", "2", "--shutdown-timeout", "1")
    try:

        @case("a 3rd connection with --max-connections 2", "waits, then answered; logged once")
        def _():
            a, b = srv.connect(), srv.connect()
            time.sleep(0.2)
            c = srv.connect()
            c.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            c.settimeout(0.7)
            try:
                waited = not c.recv(1)
            except TimeoutError:
                waited = True
            a.close()
            c.settimeout(10)
            code = answer(c)[0]
            b.close()
            logged = sum('"event":"connection_limit"' in line for line in srv.log)
            return f"waited {waited}, {code}, logged {logged}", waited and code == 200 and logged == 1

        @case("SIGTERM with a client stuck mid-body", "exit 0 within --shutdown-timeout 1 s (+ margin)")
        def _():
            s = srv.connect()
            s.sendall(post("/v1/models/sr/restore", 1_000_000).encode() + b"x" * 1000)
            time.sleep(0.3)
            start = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            try:
                code = srv.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                return "still running after 10 s", False
            took = time.monotonic() - start
            return f"exit {code} after {took:.1f} s", code == 0 and took < 5
    finally:
        srv.close()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = tmp / "in"
        folder.mkdir()
        (folder / "a.png").write_bytes(small)
        os.mkfifo(folder / "fifo.png")
        (folder / "x\nerror: forged\x1b[31m.png").write_bytes(b"not an image")

        @case("input folder with a FIFO and a forged name", "FIFO skipped, name escaped, batch done")
        def _():
            p = subprocess.run(
                [args.binary, "restore", "-n", args.bundle, "--backend", "tract", str(folder), "-o", str(tmp / "o")],
                capture_output=True,
                text=True,
                timeout=120,
            )
            ok = "fifo.png: skipped" in p.stderr and "\x1b" not in p.stderr and "\\x1b" in p.stderr
            ok = ok and not any(line.startswith("error: forged") for line in p.stderr.splitlines())
            return f"exit {p.returncode}", ok and (tmp / "o" / "a.png").exists()

        slow = tmp / "slow"
        slow.mkdir()
        for k in range(6):
            (slow / f"{k:02}.png").write_bytes(png_bytes(160, 160 + k))

        @case("Ctrl-C during a batch", "exit 130, summary, no temporary file")
        def _():
            out = tmp / "so"
            p = subprocess.Popen(
                [args.binary, "restore", "-n", args.bundle, "--backend", "tract", "--threads", "1", "--tile", "64"]
                + [str(slow), "-o", str(out)],
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + 120
            while not (out / "00.png").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            p.send_signal(signal.SIGINT)
            _, err = p.communicate(timeout=60)
            left = sorted(f.name for f in out.iterdir())
            clean = all(n.endswith(".png") for n in left)
            return f"exit {p.returncode}, {len(left)} written", p.returncode == 130 and "interrupted:" in err and clean

        @case("file-size limit (ulimit -f 1)", "write error, no temporary file")
        def _():
            out = tmp / "fo"
            out.mkdir()
            cmd = (
                f"ulimit -f 1; exec '{args.binary}' restore -n '{args.bundle}' --backend tract"
                f" '{folder / 'a.png'}' -o '{out}/b.png'"
            )
            p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
            left = list(out.iterdir())
            return f"exit {p.returncode}, {len(left)} files left", p.returncode == 1 and not left

        @case("--triton-url grpc://h:65536", "refused at once, exit 2")
        def _():
            p = subprocess.run(
                [args.binary, "restore", str(folder / "a.png"), "-o", str(tmp / "t.png")]
                + ["--triton-url", "grpc://127.0.0.1:65536"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            return f"exit {p.returncode}", p.returncode == 2 and "1 to 65535" in p.stderr

        video_cases(case, args.binary, args.bundle, tmp)
        batch_and_repo_cases(case, args.binary, args.bundle, tmp)

    print("| case | expected | got | ms | |")
    print("|---|---|---|---|---|")
    for name, expected, got, ms, ok in rows:
        got = got.replace("|", "/").replace("\n", " ")
        print(f"| {name} | {expected} | {got} | {ms:.0f} | {'ok' if ok else '**FAILED**'} |")
    failed = sum(not r[4] for r in rows)
    print(f"abuse: {len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
