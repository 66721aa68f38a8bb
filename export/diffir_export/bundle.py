"""bundle.yaml: what the runtime needs to run a model folder (its format is mirrored by the Rust `bundle`)."""

from __future__ import annotations

from pathlib import Path

import yaml

from diffir_export.config import ModelConfig
from diffir_export.schedule import schedule

FORMAT_VERSION = 1

# Graph contract shared with the runtime: file names and input/output names.
GRAPHS = {
    "cpen": {"file": "cpen.onnx", "inputs": ["image"], "outputs": ["condition"]},
    "denoiser": {"file": "denoiser.onnx", "inputs": ["x", "t", "condition"], "outputs": ["x0"]},
    "backbone": {"file": "backbone.onnx", "inputs": ["image", "ipr"], "outputs": ["output"]},
    # CPEN split at its global average pool, so the runtime can evaluate it tile by tile exactly.
    "cpen_features": {"file": "cpen_features.onnx", "inputs": ["image"], "outputs": ["features"]},
    "cpen_head": {"file": "cpen_head.onnx", "inputs": ["pooled"], "outputs": ["condition"]},
    # Optional: the backbone in float16 (float32 inputs and output; LayerNorm, H·W reductions, softmax in float32),
    # for `--precision fp16` on GPUs.
    "backbone_fp16": {"file": "backbone_fp16.onnx", "inputs": ["image", "ipr"], "outputs": ["output"]},
}
OPTIONAL_GRAPHS = ("backbone_fp16",)


def bundle_dict(cfg: ModelConfig, provenance: dict, graphs: list[str] | None = None) -> dict:
    """bundle.yaml's content; `graphs` names the graphs written (default: every required one)."""
    graphs = graphs or [g for g in GRAPHS if g not in OPTIONAL_GRAPHS]
    sched = schedule(cfg.timesteps, cfg.linear_start, cfg.linear_end)
    return {
        "format": FORMAT_VERSION,
        "name": cfg.name or f"{cfg.family}_x{cfg.scale}",
        "task": cfg.family,
        "scale": cfg.scale,
        "input_channels": cfg.input_channels,
        "ipr_dim": cfg.ipr_dim,
        "size_multiple": cfg.size_multiple,
        "padding": cfg.padding,
        "cpen_halo": cfg.cpen_halo,
        "schedule": {
            "kind": "sqrt_linspace_squared",
            "timesteps": cfg.timesteps,
            "linear_start": cfg.linear_start,
            "linear_end": cfg.linear_end,
            "coef1": [float(v) for v in sched["posterior_mean_coef1"]],
            "coef2": [float(v) for v in sched["posterior_mean_coef2"]],
        },
        "graphs": {name: dict(spec) for name, spec in GRAPHS.items() if name in graphs},
        "model": cfg.to_dict(),
        "provenance": provenance,
    }


def dump_bundle_yaml(path: Path, meta: dict) -> None:
    """Write bundle.yaml's content (a `bundle_dict`, or one read back and changed) in the exporter's layout."""
    text = yaml.safe_dump(meta, sort_keys=False, default_flow_style=None, width=120)
    Path(path).write_text("# DiffIR model bundle, written by diffir_export\n" + text)


def write_bundle_yaml(path: Path, cfg: ModelConfig, provenance: dict, graphs: list[str] | None = None) -> None:
    dump_bundle_yaml(path, bundle_dict(cfg, provenance, graphs))
