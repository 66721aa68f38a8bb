"""The built wheel on its own: installed into a fresh virtual environment with nothing else (its dependencies
come from the package index), `import diffir` restores with the built-in model the CLI's bytes, on the
onnxruntime package the wheel pulled in; with that package removed, on tract. scripts/test.sh builds the
wheel and names it in DIFFIR_WHEEL."""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

from conftest import BUNDLES, missing, run_cli

# The wheel's dependencies and theirs (onnxruntime 1.31's), nothing more.
ALLOWED = {"diffir", "numpy", "onnxruntime", "coloredlogs", "humanfriendly", "flatbuffers", "packaging",
           "protobuf", "sympy", "mpmath"}  # fmt: skip


def test_the_wheel_in_a_fresh_venv(tmp_path, cli):
    wheel = Path(os.environ.get("DIFFIR_WHEEL", ""))
    if not wheel.is_file():
        missing("DIFFIR_WHEEL names no built wheel (scripts/test.sh builds it)")
    # One wheel for every CPython from 3.9: the stable ABI (pip's build tags it linux_x86_64; `maturin build
    # --zig --compatibility manylinux_2_28` manylinux_2_28, which this test passed too).
    assert "-cp39-abi3-" in wheel.name and wheel.name.endswith("_x86_64.whl"), wheel.name
    venv.create(tmp_path / "venv", with_pip=True)
    py = tmp_path / "venv" / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DYLIB_PATH", "PYTHONPATH", "VIRTUAL_ENV")}
    pip = [str(py), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "-q", str(wheel)], check=True, env=env)
    listed = subprocess.run([*pip, "list", "--format=json", "--exclude-editable"], capture_output=True, text=True,
                            check=True, env=env).stdout  # fmt: skip
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed)} - {"pip", "setuptools"}
    assert names <= ALLOWED, f"the fresh venv holds more than the wheel's dependencies: {names - ALLOWED}"
    src = BUNDLES / "sr_x4" / "input.png"
    script = (
        "import json, sys, diffir\n"
        "diffir.restore_file(sys.argv[1], sys.argv[2])\n"
        "print(json.dumps(diffir.Pipeline().info))\n"
    )
    r = subprocess.run([str(py), "-c", script, str(src), str(tmp_path / "py.png")], capture_output=True, text=True,
                       env=env, cwd=tmp_path, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["model"] == "diffir-x4-small"
    assert info["backend"].startswith("onnxruntime"), info
    assert info["onnxruntime"].startswith(str(tmp_path / "venv")), info
    run_cli(cli, "restore", src, "-o", tmp_path / "cli.png", "-q")
    assert (tmp_path / "py.png").read_bytes() == (tmp_path / "cli.png").read_bytes()

    # Without the onnxruntime package (and no library installed elsewhere), tract runs.
    subprocess.run([*pip, "uninstall", "-q", "-y", "onnxruntime"], check=True, env=env)
    env["DIFFIR_ORT_DIR"] = str(tmp_path / "no_onnxruntime_here")
    r = subprocess.run([str(py), "-c", script, str(src), str(tmp_path / "tract.png")], capture_output=True, text=True,
                       env=env, cwd=tmp_path, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["backend"] == "tract"
    run_cli(cli, "restore", src, "-o", tmp_path / "cli_tract.png", "-q", "--backend", "tract")
    assert (tmp_path / "tract.png").read_bytes() == (tmp_path / "cli_tract.png").read_bytes()
