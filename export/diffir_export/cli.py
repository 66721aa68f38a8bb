"""Command line: `python -m diffir_export export|detect|reference ...`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from diffir_export import __version__, checkpoint, graph_opt
from diffir_export.config import ConfigError, ModelConfig
from diffir_export.onnx_export import TOLERANCE, ExportError, export_bundle, upgrade_bundle
from diffir_export.reference import write_reference


def _load(args) -> tuple:
    given = ModelConfig.load(args.config) if args.config else None
    model, cfg, ckpt = checkpoint.load(args.checkpoint, given, config_source=str(args.config))
    default = (
        Path(args.out).name if getattr(args, "out", None) and args.command == "export" else Path(args.checkpoint).stem
    )
    name = args.name or (given.name if given and given.name else default)
    return model, cfg.replace(name=name), ckpt


def cmd_export(args) -> int:
    model, cfg, ckpt = _load(args)
    provenance = {
        "checkpoint": ckpt.path.name,
        "checkpoint_sha256": ckpt.sha256,
        "checkpoint_layout": ckpt.layout,
        "exporter": f"diffir_export {__version__}",
        "torch": torch.__version__.split("+")[0],
    }
    print(f"{ckpt.path}: {ckpt.layout}; {cfg.family} x{cfg.scale}, dim {cfg.dim}, blocks {list(cfg.num_blocks)}")
    export_bundle(
        model, cfg, Path(args.out), provenance, overwrite=args.overwrite, fp16=args.fp16, optimize=not args.no_optimize
    )
    print(f"wrote {args.out}/bundle.yaml and its graphs")
    return 0


def cmd_upgrade(args) -> int:
    for folder in args.bundles:
        if not upgrade_bundle(Path(folder)):
            print(f"{folder}: up to date")
    return 0


def cmd_optimize(args) -> int:
    for folder in args.bundles:
        try:
            graph_opt.optimize_bundle(Path(folder), TOLERANCE)
        except ValueError as e:
            raise ExportError(str(e)) from e
    return 0


def cmd_detect(args) -> int:
    _, cfg, ckpt = _load(args)
    print(f"# {ckpt.path} ({ckpt.layout})")
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None), end="")
    return 0


def cmd_reference(args) -> int:
    from PIL import Image

    model, cfg, _ = _load(args)
    image = np.asarray(Image.open(args.image).convert("RGB"), dtype=np.float32) / 255.0
    mask = None
    if args.mask:
        mask = (np.asarray(Image.open(args.mask).convert("L")) > 0).astype(np.float32)
    if args.noise:
        noise = np.load(args.noise).astype(np.float32)
    else:
        noise = torch.randn(1, cfg.ipr_dim, generator=torch.Generator().manual_seed(args.seed)).numpy()
    write_reference(Path(args.out), model, image, noise, mask)
    print(f"wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffir_export", description=__doc__)
    p.add_argument("--version", action="version", version=__version__)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--checkpoint", required=True, help="official S2 checkpoint (.pth / .ckpt)")
        sp.add_argument("--config", help="model YAML (configs/); optional, checked against the checkpoint")
        sp.add_argument("--name", help="bundle name (default: the config's name or the checkpoint's stem)")

    e = sub.add_parser("export", help="write the ONNX graphs and bundle.yaml")
    common(e)
    e.add_argument("--out", required=True, help="bundle folder")
    e.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    e.add_argument(
        "--fp16",
        action="store_true",
        help="also write backbone_fp16.onnx (float16 body, float32 I/O and reductions) for --precision fp16",
    )
    e.add_argument(
        "--no-optimize",
        action="store_true",
        help="keep the plain backbone (default: rewrite its channel means as 1x1 convolutions, verified)",
    )
    e.set_defaults(func=cmd_export)

    o = sub.add_parser("optimize", help="apply the export-time rewrites to existing bundles, verified, in place")
    o.add_argument("bundles", nargs="+", help="bundle folders")
    o.set_defaults(func=cmd_optimize)

    u = sub.add_parser("upgrade", help="fix the declarations of bundles written by an earlier exporter, in place")
    u.add_argument("bundles", nargs="+", help="bundle folders")
    u.set_defaults(func=cmd_upgrade)

    d = sub.add_parser("detect", help="print the hyper-parameters detected from a checkpoint")
    common(d)
    d.set_defaults(func=cmd_detect)

    r = sub.add_parser("reference", help="save a whole-image reference run (.npz) for the runtime's tests")
    common(r)
    r.add_argument("--image", required=True)
    r.add_argument("--mask")
    r.add_argument("--noise", help=".npy of shape (1, ipr_dim); default: drawn with --seed")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", required=True)
    r.set_defaults(func=cmd_reference)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (checkpoint.CheckpointError, ConfigError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
