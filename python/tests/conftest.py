"""What the package's tests share: the repository's fixtures, the CLI to compare with, and PNG helpers.

The CLI (target/debug/diffir, or $DIFFIR_BIN) is the reference: every output of the package must equal the
CLI's for the same input, model, backend and seed. Where it or the onnxruntime library is missing the tests
say so and skip, and fail under CI=true.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import diffir
import numpy as np
import png
import pytest

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = ROOT / "tests" / "fixtures" / "bundles"
IMAGES = ROOT / "tests" / "fixtures" / "images"
CI = os.environ.get("CI") == "true"
# One test per backend: tract always; onnxruntime's CPU provider through the onnxruntime package's library.
BACKENDS = ["tract", "ort-cpu"]


def missing(why: str) -> None:
    """Skip, or fail under CI=true, where a test cannot run."""
    if CI:
        pytest.fail(f"{why} (CI=true: nothing may be skipped)")
    pytest.skip(why)


@pytest.fixture(scope="session")
def cli() -> Path:
    binary = Path(os.environ.get("DIFFIR_BIN", ROOT / "target" / "debug" / "diffir"))
    if not binary.is_file():
        missing(f"the CLI {binary} is not built (cargo build)")
    return binary


def cli_env() -> dict[str, str]:
    """The CLI's environment: the same onnxruntime library as the package loads."""
    env = dict(os.environ)
    if diffir._library is not None:
        env.setdefault("ORT_DYLIB_PATH", str(diffir._library))
    return env


def run_cli(cli: Path, *args: str | Path, ok: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(cli), *map(str, args)], capture_output=True, text=True, env=cli_env(), check=False)
    if ok and r.returncode != 0:
        raise AssertionError(f"diffir {' '.join(map(str, args))} exited {r.returncode}: {r.stderr}")
    return r


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    if request.param.startswith("ort") and diffir._library is None:
        missing("the onnxruntime package is not installed")
    return request.param


def read_png(path: Path) -> np.ndarray:
    """A PNG's samples as H×W×C (H×W for gray) of uint8 or uint16, as written."""
    w, h, rows, info = png.Reader(filename=str(path)).asDirect()
    dtype = np.uint16 if info["bitdepth"] > 8 else np.uint8
    a = np.vstack([np.asarray(r, dtype=dtype) for r in rows]).reshape(h, w, info["planes"])
    return a[:, :, 0] if info["planes"] == 1 else a


def write_png(path: Path, a: np.ndarray) -> None:
    """Write H×W×C (or H×W) uint8 or uint16 samples as a PNG of that depth."""
    planes = 1 if a.ndim == 2 else a.shape[2]
    h, w = a.shape[:2]
    writer = png.Writer(w, h, greyscale=planes <= 2, alpha=planes in (2, 4), bitdepth=16 if a.dtype == np.uint16 else 8)
    with open(path, "wb") as f:
        writer.write(f, a.reshape(h, w * planes).tolist())
