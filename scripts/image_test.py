"""Build the container images and test them by running them (the test command runs this).

    python scripts/image_test.py --binary target/debug/diffir [--skip-cuda]

1. The base: debian:bookworm-slim made locally from Debian's archive where no registry can be reached
   (scripts/local-base-image.sh; the root filesystem is cached beside the wheels).
2. The `cpu` image (scripts/build-image.sh --prebuilt BINARY), then, running it:
   - `/readyz` answers 200 and the health check passes; the server runs as UID 10001 with a read-only root;
   - a restore POSTed to it is byte for byte the CLI's for the same input and seed;
   - `diffir restore` inside it (a mounted folder) writes the same bytes;
   - SIGTERM during a request: the request completes (200) and the container exits 0.
3. The `cuda` image: built, and inside it every shared library the CUDA provider and the CUDA libraries need
   resolves (`ldd`), except the NVIDIA driver's libcuda.so.1, which the host's GPU runtime mounts.
4. contrib/compose.yaml parses and wires Triton and diffir as the README says.
Prints one line per check and the image sizes; exits 1 on the first failure. Machines where containers need
runtime flags get them here (runc, ulimits, host networking), never in the Containerfile.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ARGS: argparse.Namespace
# Runtime flags this project's machines need (crun fails on their hybrid cgroups; user namespaces are out).
RUN = ["podman", "--runtime", "runc", "run", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
RUN += ["--network", "host"]
BUILD_EXTRA = ["--", "--isolation", "chroot"]
SAMPLE = ROOT / "tests" / "fixtures" / "bundles" / "sr_x4" / "input.png"
# A larger input, slow enough on the CPU that SIGTERM lands while it is being restored.
SLOW = ROOT / "samples" / "chelsea.png"


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if r.returncode != 0:
        raise SystemExit(f"FAILED: {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r


PASSED = 0


def check(ok: bool, what: str) -> None:
    global PASSED
    print(f"{'ok' if ok else 'FAILED'}: {what}", flush=True)
    if not ok:
        print(f"images: {PASSED} passed, 1 failed")
        raise SystemExit(1)
    PASSED += 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, body: bytes | None = None, timeout: float = 120) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def ensure_tools() -> None:
    missing = [t for t in ("podman", "runc", "debootstrap") if shutil.which(t) is None]
    if missing:
        print(f"installing {' '.join(missing)} from Debian's packages", flush=True)
        sh(["apt-get", "update", "-qq"])
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        sh(["apt-get", "install", "-y", "-qq", "podman", "runc", "debootstrap"], env=env)


def free_disk() -> str:
    """Free space where podman writes its layers (/var/tmp, /var/lib/containers) and the build (target/)."""
    return ", ".join(f"{d} {shutil.disk_usage(d).free / 2**30:.1f} GiB" for d in ("/var/tmp", ROOT / "target"))


def build(args: list[str]) -> tuple[str, int]:
    # A CUDA image takes about 7 GB while it is built (wheels, the unpacked libraries, the layer podman writes
    # and the image it stores): the free space is printed first, so a full disk is told apart from a bad build.
    print(f"free disk before building: {free_disk()}", flush=True)
    r = sh([str(ROOT / "scripts" / "build-image.sh"), *args, *BUILD_EXTRA], cwd=ROOT)
    name, size = r.stdout.strip().splitlines()[-1].split()[:2]
    return name, int(size)


def wait_ready(url: str, name: str, seconds: float = 60) -> None:
    end = time.time() + seconds
    while time.time() < end:
        try:
            if request(url + "/readyz", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True, check=False)
    raise SystemExit(f"FAILED: {name} did not become ready\n{logs.stdout}{logs.stderr}")


def cpu_checks(binary: Path) -> int:
    image, size = build(["--prebuilt", str(binary), "--tag", "diffir:image-test"])
    print(f"built {image}: {size / 2**20:.0f} MiB", flush=True)
    port = free_port()
    name = f"diffir-image-test-{port}"
    url = f"http://127.0.0.1:{port}"
    cmd = [*RUN, "-d", "--name", name, "--read-only", "-e", f"DIFFIR_PORT={port}", image]
    sh([*cmd, "serve", "--listen", f"127.0.0.1:{port}"])
    try:
        wait_ready(url, name)
        check(True, "/readyz answers 200")
        hc = subprocess.run(["podman", "healthcheck", "run", name], capture_output=True, text=True, check=False)
        check(hc.returncode == 0, f"the image's health check passes ({hc.stdout.strip() or hc.returncode})")
        pid = sh(["podman", "inspect", "--format", "{{.State.Pid}}", name]).stdout.strip()
        uid = next(
            line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:")
        )
        check(uid == "10001", f"the server runs as UID {uid} (10001), on a read-only root filesystem")
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            cli = tmp / "cli.png"
            sh([str(binary), "restore", str(SAMPLE), "-o", str(cli), "-q"])
            status, body = request(f"{url}/v1/models/diffir-x4-small/restore?format=png", SAMPLE.read_bytes())
            check(status == 200 and body == cli.read_bytes(), f"HTTP restore = the CLI's bytes ({status})")
            data = tmp / "data"
            data.mkdir()
            data.chmod(0o777)
            shutil.copy(SAMPLE, data / "in.png")
            sh(
                [
                    *RUN,
                    "--rm",
                    "--read-only",
                    "-v",
                    f"{data}:/data",
                    image,
                    "restore",
                    "/data/in.png",
                    "-o",
                    "/data/out.png",
                ]
            )
            out = (data / "out.png").read_bytes()
            check(out == cli.read_bytes(), "`diffir restore` in the image writes the CLI's bytes")
        # SIGTERM while a request runs: it completes, then the container exits 0.
        result: dict = {}

        def slow() -> None:
            result["r"] = request(f"{url}/v1/models/diffir-x4-small/restore?format=png", SLOW.read_bytes(), 300)

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(1.5)
        sh(["podman", "kill", "--signal", "TERM", name])
        t.join()
        code = sh(["podman", "wait", name]).stdout.strip()
        status = result["r"][0]
        check(status == 200 and len(result["r"][1]) > 0, f"the request in flight at SIGTERM completed ({status})")
        check(code == "0", f"the container exited {code} (0) after SIGTERM")
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, check=False)
    return size


def remove(image: str, dist: str) -> None:
    """Give the disk back once an image's checks are done: the image, its dangling layers, its unpacked files."""
    subprocess.run(["podman", "rmi", "-f", image], capture_output=True, check=False)
    subprocess.run(["podman", "image", "prune", "-f"], capture_output=True, check=False)
    shutil.rmtree(ROOT / "target" / "image" / "dist" / dist, ignore_errors=True)


def cuda_checks() -> int:
    image, size = build(["--cuda", "--prebuilt", str(ARGS.binary), "--tag", "diffir:image-test-cuda"])
    print(f"built {image}: {size / 2**20:.0f} MiB", flush=True)
    script = (
        "cd /opt/diffir/lib && for f in *.so*; do ldd \"$f\" | grep 'not found' | grep -v libcuda.so.1 "
        '| sed "s|^|$f: |"; done; ldd libonnxruntime_providers_cuda.so'
    )
    r = sh([*RUN, "--rm", "--entrypoint", "/bin/bash", image, "-c", script])
    missing = [line for line in r.stdout.splitlines() if ": " in line and "not found" in line]
    check(not missing, "every library of the CUDA provider resolves in the image (libcuda.so.1 is the host's)")
    for want in ("libcublasLt.so.13", "libcudart.so.13", "libcurand.so.10"):
        line = next((x for x in r.stdout.splitlines() if want in x), "")
        check("/opt/diffir/lib/" in line, f"the provider finds {want} in the image: {line.strip()}")
    # Without a GPU the image refuses to serve: exit 2, never a CPU run that claims CUDA.
    run = subprocess.run([*RUN, "--rm", image], capture_output=True, text=True, check=False, timeout=120)
    check(run.returncode == 2, f"without a GPU the CUDA image exits {run.returncode} (2): {run.stderr.strip()[-160:]}")
    return size


def compose_checks() -> None:
    c = yaml.safe_load((ROOT / "contrib" / "compose.yaml").read_text())
    services = c["services"]
    triton, diffir = services["triton"], services["diffir"]
    check("tritonserver" in " ".join(triton["command"]), "compose: triton runs tritonserver")
    check(any(":/models" in str(v) for v in triton["volumes"]), "compose: triton mounts the repository")
    check("--triton-url" in diffir["command"], "compose: diffir serves through --triton-url")
    check(diffir["depends_on"]["triton"]["condition"] == "service_healthy", "compose: diffir waits for triton")
    check(all("healthcheck" in s for s in services.values()), "compose: both services have health checks")


def main() -> int:
    global ARGS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", type=Path, default=ROOT / "target" / "release" / "diffir")
    p.add_argument("--skip-cuda", action="store_true", help="leave out the CUDA image (its wheels are 1.4 GB)")
    ARGS = p.parse_args()
    compose_checks()
    if os.geteuid() != 0:
        check(os.environ.get("CI") != "true", "the image tests need root (podman); CI=true")
        print("skipped: the image tests need root for podman")
        return 0
    ensure_tools()
    sh([str(ROOT / "scripts" / "local-base-image.sh")])
    try:
        cpu = cpu_checks(ARGS.binary.resolve())
    finally:
        remove("diffir:image-test", "cpu")
    try:
        cuda = None if ARGS.skip_cuda else cuda_checks()
    finally:
        remove("diffir:image-test-cuda", "cuda")
    sizes = f"cpu {cpu / 2**20:.0f} MiB" + (f", cuda {cuda / 2**20:.0f} MiB" if cuda else "")
    print(f"image sizes (binary {ARGS.binary}): {sizes}")
    print(f"images: {PASSED} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
