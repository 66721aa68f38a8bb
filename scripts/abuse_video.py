"""The video, YUV4MPEG2, memory and repository cases of scripts/abuse.py: what a hostile user tries with
`diffir video`, `diffir restore --format y4m`, a batch holding one huge image and `diffir triton-repo`.
Each case is bounded in time; scripts/abuse.py prints them in its table.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

Case = Callable[[str, str], Callable]


def run(cmd: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, timeout=timeout, check=False, **kw)


def one_line(p: subprocess.CompletedProcess) -> bool:
    return p.returncode == 2 and len(p.stderr.decode().strip().splitlines()) == 1


def alive(pid: int) -> bool:
    try:
        return ") Z " not in Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False


def interrupt(proc: subprocess.Popen) -> int | None:
    """Send one SIGINT; the exit code within 10 s, else None (the process is killed)."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return None


def video_cases(case: Case, binary: str, bundle: str, tmp: Path) -> None:
    if shutil.which("ffmpeg") is None:
        if os.environ.get("CI") == "true":
            raise SystemExit("abuse: the video cases need ffmpeg (the test command installs it); CI=true")
        print("skipped: the video cases (no ffmpeg)")
        return
    binary, bundle = str(Path(binary).resolve()), str(Path(bundle).resolve())
    d = tmp / "video"
    d.mkdir()
    clip = d / "clip.mkv"
    run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=64x48:r=24:d=0.5", "-c:v", "ffv1", str(clip)])
    model = ["-n", bundle, "--backend", "tract", "-q"]

    def video(*a: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return run([binary, "video", *model, *a], env=env, cwd=cwd)

    def y4m(stdin: bytes, *a: str) -> subprocess.CompletedProcess:
        cmd = [binary, "restore", "-", "-o", "-", "--format", "y4m", *model, *a]
        return subprocess.run(cmd, input=stdin, capture_output=True, timeout=120, check=False)

    def timed_clip(name: str, setpts: str, codec: str) -> Path:
        """A second of 64x48 frames at 24 fps with the timestamps `setpts` gives them."""
        path = d / name
        run(
            ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=64x48:r=24:d=1", "-vf", f"setpts='{setpts}'"]
            + ["-fps_mode", "passthrough", "-c:v", codec, str(path)]
        )
        return path

    (d / "notes.txt").write_text("mine")
    clip_bytes = clip.read_bytes()

    @case("video -o . --overwrite (the folder holding the input)", "refused, exit 2, nothing touched")
    def _():
        p = video(str(clip), "-o", str(d), "--overwrite")
        ok = one_line(p) and clip.read_bytes() == clip_bytes and (d / "notes.txt").read_text() == "mine"
        return f"exit {p.returncode}", ok

    @case("video -o INPUT --overwrite", "refused, exit 2, the input kept")
    def _():
        p = video(str(clip), "-o", str(clip), "--overwrite")
        return f"exit {p.returncode}", one_line(p) and clip.read_bytes() == clip_bytes

    @case("video into an existing frames folder --overwrite", "frames written, the user's file kept")
    def _():
        frames = d / "frames"
        frames.mkdir()
        (frames / "other.txt").write_text("keep")
        p = video(str(clip), "-o", str(frames), "--overwrite")
        n = len(list(frames.glob("frame_*.png")))
        return f"exit {p.returncode}, {n} frames", p.returncode == 0 and n == 12 and (frames / "other.txt").exists()

    @case("encoder exits 0 with a cut file (a full disk)", "exit 2, read back as incomplete, no output")
    def _():
        fake = d / "ffmpeg-full"
        fake.write_text(
            f'#!/bin/sh\n"{shutil.which("ffmpeg")}" "$@" || exit $?\nfor last; do :; done\n'
            'out="${last#file:}"\ncase "$out" in *.partial.*) truncate -s 4096 "$out";; esac\nexit 0\n'
        )
        fake.chmod(0o755)
        out = d / "full.mp4"
        p = video(str(clip), "-o", str(out), env={**os.environ, "DIFFIR_FFMPEG": str(fake)})
        ok = p.returncode == 2 and b"incomplete" in p.stderr and not out.exists()
        return f"exit {p.returncode}", ok and not list(d.glob(".diffir-*"))

    @case("inputs named -report, -i.mp4, file:x.mp4, 12:30.mp4, pipe:0.mkv", "each is that file; no log")
    def _():
        ok = True
        for name in ["-report", "-i.mp4", "file:x.mp4", "12:30.mp4", "pipe:0.mkv"]:
            shutil.copy(clip, d / name)
            out = f"o-{name.replace(':', '_')}.mkv"
            p = run([binary, "video", *model, "-o", out, "--", name], cwd=d)
            size = run(["ffprobe", "-v", "error", "-show_entries", "stream=width", "-of", "csv=p=0", f"file:{d / out}"])
            ok = ok and p.returncode == 0 and size.stdout.strip() == b"256"
        logs = list(d.glob("ffprobe-*.log")) + list(d.glob("ffmpeg-*.log"))
        return f"{'all' if ok else 'not all'} restored, {len(logs)} logs", ok and not logs

    @case("a FIFO as the input", "refused at once, exit 2")
    def _():
        fifo = d / "pipe.mp4"
        os.mkfifo(fifo)
        start = time.monotonic()
        p = video(str(fifo), "-o", str(d / "f.mp4"))
        took = time.monotonic() - start
        return f"exit {p.returncode} in {took:.1f} s", one_line(p) and took < 20

    @case("a decoder that stalls, then one Ctrl-C", "exit 130, the decoder killed")
    def _():
        pid_file = d / "decoder.pid"
        fake = d / "ffmpeg-stalls"
        fake.write_text(f"#!/bin/sh\necho $$ > '{pid_file}'\nexec sleep 600\n")
        fake.chmod(0o755)
        env = {**os.environ, "DIFFIR_FFMPEG": str(fake)}
        proc = subprocess.Popen([binary, "video", *model, str(clip), "-o", str(d / "s.mp4")], env=env)
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        code = interrupt(proc)
        if code is None:
            return "still running 10 s after Ctrl-C", False
        pid = int(pid_file.read_text())
        deadline = time.monotonic() + 5
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        return f"exit {code}, decoder {'alive' if alive(pid) else 'gone'}", code == 130 and not alive(pid)

    @case("video --duration 0, --max-pixels 1000", "usage error; refused before decoding (exit 2)")
    def _():
        a = video(str(clip), "-o", str(d / "z.mp4"), "--duration", "0")
        b = video(str(clip), "-o", str(d / "z.mp4"), "--max-pixels", "1000")
        return f"exit {a.returncode}, {b.returncode}", a.returncode == 2 and one_line(b) and b"3072 pixels" in b.stderr

    @case("VFR in Matroska", "every timestamp kept (a note)")
    def _():
        vfr = timed_clip("vfr.mkv", "(N/24+if(gt(N,10),0.3,0))/TB", "libx264")
        p = run([binary, "video", "-n", bundle, "--backend", "tract", str(vfr), "-o", str(d / "vfr-out.mkv")])
        return f"exit {p.returncode}", p.returncode == 0 and b"variable frame rate: 24 frame timestamps" in p.stderr

    @case("two frames at one timestamp", "refused before the restore, naming them (exit 2)")
    def _():
        dup = timed_clip("dup.mkv", "(N+if(eq(N,5),-1,0))/24/TB", "ffv1")
        p = video(str(dup), "-o", str(d / "dup-out.mkv"))
        return f"exit {p.returncode}", one_line(p) and b"frames 5 and 6 have the same timestamp" in p.stderr

    stream = run(
        ["ffmpeg", "-v", "error", "-i", str(clip), "-f", "yuv4mpegpipe", "-pix_fmt", "yuv420p", "-frames:v", "4", "-"]
    ).stdout
    header = stream.index(b"\n") + 1
    frame = 6 + 64 * 48 * 3 // 2

    @case("y4m header W4294967296 H4294967296 (40 bytes)", "one line, exit 2 (it panicked)")
    def _():
        p = y4m(b"YUV4MPEG2 W4294967296 H4294967296 F25:1 Cmono\n")
        return f"exit {p.returncode}", one_line(p)

    @case("y4m 64x48 under --max-pixels 1000", "refused from the header, exit 2")
    def _():
        p = y4m(stream, "--max-pixels", "1000")
        return f"exit {p.returncode}", one_line(p) and b"3072 pixels" in p.stderr

    @case("y4m stream cut inside frame 3", "error naming frame 3, frames 1-2 written")
    def _():
        p = y4m(stream[: header + 2 * frame + frame // 2])
        out_frame = 6 + 256 * 192 * 3 // 2
        written = (len(p.stdout) - p.stdout.index(b"\n") - 1) // out_frame if p.stdout else 0
        ok = p.returncode == 2 and b"frame 3 is truncated" in p.stderr and written == 2
        return f"exit {p.returncode}, {written} frames", ok

    @case("y4m pipe that stalls, then one Ctrl-C", "exit 130 while the read blocks")
    def _():
        cmd = [binary, "restore", "-", "-o", "-", "--format", "y4m", *model]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        proc.stdin.write(stream[: header + 1000])
        proc.stdin.flush()
        time.sleep(1.5)
        code = interrupt(proc)
        proc.stdin.close()
        return ("still running 10 s after Ctrl-C" if code is None else f"exit {code}"), code == 130


def batch_and_repo_cases(case: Case, binary: str, bundle: str, tmp: Path) -> None:
    @case("a 1x20,000,000 PNG between two images, ulimit -v 3000000", "refused with its figures, batch done")
    def _():
        from PIL import Image

        folder = tmp / "huge"
        folder.mkdir()
        small = Path(bundle) / "input.png"
        shutil.copy(small, folder / "a.png")
        shutil.copy(small, folder / "c.png")
        Image.new("L", (20_000_000, 1)).save(folder / "b.png", compress_level=1)
        out = tmp / "huge-out"
        cmd = f"ulimit -v 3000000; exec '{binary}' restore '{folder}' -o '{out}' -n '{bundle}' --backend tract -q"
        p = run(["bash", "-c", cmd], timeout=300)
        ok = p.returncode == 1 and b"needs about" in p.stderr and (out / "a.png").exists() and (out / "c.png").exists()
        return f"exit {p.returncode}", ok

    @case("--tile 99999999, --max-memory 1", "restored; the summary says one worker cannot fit (no -v)")
    def _():
        small = Path(bundle) / "input.png"
        ok = True
        for extra in (["--tile", "99999999"], ["--max-memory", "1"]):
            cmd = [binary, "restore", str(small), "-o", str(tmp / "t.png"), "-n", bundle, "--backend", "tract"]
            p = run([*cmd, *extra, "--overwrite"])
            ok = ok and p.returncode == 0 and b"is less than one worker needs" in p.stderr.split(b"\n")[0]
        return ("said" if ok else "not said"), ok

    @case("triton-repo --overwrite over a model with version 2", "version 1 and the config replaced, 2 kept")
    def _():
        repo = tmp / "repo"
        base = [binary, "triton-repo", "--model", bundle, "--out", str(repo), "--cpu"]
        first = run(base)
        names = [p.name for p in repo.iterdir()]
        backbone = repo / next(n for n in names if n.endswith("_backbone"))
        (backbone / "2").mkdir()
        (backbone / "2" / "model.onnx").write_bytes(b"v2")
        again = run([*base, "--overwrite"])
        kept = (backbone / "2" / "model.onnx").read_bytes() == b"v2"
        return f"exit {first.returncode}, {again.returncode}", again.returncode == 0 and kept
