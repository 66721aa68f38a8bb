"""Export a real-size model with random weights (seed 0) into the cache the Rust tests read: the shapes and
widths of a released model, without its checkpoint (none can be downloaded here), for tests and benchmarks
whose figures depend on the network's size, not on its weights (tests/it/activations.rs).

  python scripts/export_random.py [--config CONFIG ...] [--out target/random-bundles]

The configs default to configs/realsr_x2.yaml and configs/deblur_gopro.yaml. Each bundle goes to OUT/NAME
(NAME: the config's name); one already there is kept. The test command runs this before `cargo test`
(about a minute per bundle on 2 cores, once per machine: the exports are cached for every clone, keyed by the
exporter's source and the config, scripts/export_cache.py).
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "export"))
sys.path.insert(0, str(ROOT / "scripts"))

from export_cache import cached, exporter_hash, files_hash  # noqa: E402


def export_random(config: Path, dest: Path, fp16: bool = False) -> None:
    """Export `config`'s network with random weights (seed 0) to `dest`, with its fp16 backbone where `fp16`;
    a bundle already there is kept."""
    if (dest / "bundle.yaml").is_file():
        return
    import torch

    from diffir_export.arch import DiffIRS2
    from diffir_export.config import ModelConfig
    from diffir_export.onnx_export import export_bundle

    cfg = ModelConfig.load(config)
    torch.manual_seed(0)
    model = DiffIRS2(cfg).eval()
    t = time.perf_counter()
    provenance = {"checkpoint": f"random weights, torch.manual_seed(0), {config.name} (scripts/export_random.py)"}
    export_bundle(model, cfg, dest, provenance, overwrite=True, log=lambda s: None, fp16=fp16)
    print(f"exported {cfg.name} with random weights to {dest} in {time.perf_counter() - t:.0f} s", flush=True)


def main() -> int:
    from diffir_export.config import ModelConfig

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--config",
        type=Path,
        nargs="+",
        default=[ROOT / "configs" / "realsr_x2.yaml", ROOT / "configs" / "deblur_gopro.yaml"],
    )
    ap.add_argument("--out", type=Path, default=ROOT / "target" / "random-bundles")
    args = ap.parse_args()
    for config in args.config:
        name = ModelConfig.load(config).name
        key = f"random-{exporter_hash()}-{files_hash(config)}"
        cached(key, name, args.out / name, lambda dest, config=config: export_random(config, dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
