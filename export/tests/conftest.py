"""Shared paths and helpers for the exporter's tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
BUNDLES = REPO / "tests" / "fixtures" / "bundles"
SHARED = REPO.parent / "shared"
OFFICIAL = SHARED / "fixtures" / "official"
FIXTURE_NAMES = ["mini_sr_x4", "mini_sr_x2", "mini_sr_x1", "mini_deblur", "mini_inpaint"]

if not OFFICIAL.is_dir() and os.environ.get("CI") == "true":
    raise RuntimeError(f"official fixtures not found at {OFFICIAL} and CI=true: the tests that need them cannot run")
needs_shared = pytest.mark.skipif(
    not OFFICIAL.is_dir(), reason=f"official fixtures not found at {OFFICIAL} (../shared is absent here)"
)


def run_bundle(bundle: Path, net_input: np.ndarray, noise: np.ndarray) -> dict[str, np.ndarray]:
    """Drive a bundle's whole-image graphs (cpen, denoiser, backbone) with onnxruntime and a plain Python loop
    over the bundle's schedule."""
    meta = yaml.safe_load((bundle / "bundle.yaml").read_text())
    opts = ort.SessionOptions()
    opts.log_severity_level = 3

    def session(name):
        return ort.InferenceSession(
            str(bundle / meta["graphs"][name]["file"]), opts, providers=["CPUExecutionProvider"]
        )

    cpen, den, bb = session("cpen"), session("denoiser"), session("backbone")
    sched = meta["schedule"]
    coef1 = np.asarray(sched["coef1"], dtype=np.float32)
    coef2 = np.asarray(sched["coef2"], dtype=np.float32)
    c = cpen.run(None, {"image": net_input})[0]
    x = noise.astype(np.float32)
    steps = []
    for t in reversed(range(sched["timesteps"])):
        x0 = den.run(None, {"x": x, "t": np.full((x.shape[0],), t, dtype=np.int64), "condition": c})[0]
        x = coef1[t] * x0 + coef2[t] * x
        steps.append(x)
    out = bb.run(None, {"image": net_input, "ipr": x})[0]
    return {"c": c, "iprs": np.stack(steps), "ipr": x, "output": out}
