"""Export every official fixture checkpoint (../shared/fixtures/official) into the cache the Rust tests read.

  python scripts/export_official.py [--official DIR] [--out target/official-bundles]

The test command runs this before `cargo test`, so the slow PyTorch exports happen here, once per exporter
version: bundles go to OUT/HASH/NAME, where HASH is the exporter-source hash that tests/it/official.rs
computes the same way (SHA-256 over each .py file under export/diffir_export, sorted by relative path, as
path NUL content NUL; the first 16 hex digits). The exports are cached for every clone on the machine
(scripts/export_cache.py): a bundle already exported by this exporter version is copied, not exported again.
"""

import argparse
import subprocess
import sys
from pathlib import Path

from export_cache import ROOT, cached, exporter_hash, files_hash


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", type=Path, default=ROOT.parent / "shared" / "fixtures" / "official")
    ap.add_argument("--out", type=Path, default=ROOT / "target" / "official-bundles")
    args = ap.parse_args()
    if not args.official.is_dir():
        print(f"official fixtures not found at {args.official}: nothing to export")
        return 0
    version = exporter_hash()
    for ckpt in sorted(args.official.glob("*/checkpoint.pth")):
        name = ckpt.parent.name

        def export(dest: Path, ckpt: Path = ckpt, name: str = name) -> None:
            print(f"exporting {name} -> {dest}", flush=True)
            cmd = [sys.executable, "-m", "diffir_export", "export", "--checkpoint", str(ckpt), "--out", str(dest)]
            subprocess.run([*cmd, "--overwrite"], check=True, cwd=ROOT / "export")

        # Keyed by the exporter and the fixture's files, placed where the tests look (by exporter version).
        cached(f"{version}-{files_hash(ckpt.parent)}", name, args.out / version / name, export)
    return 0


if __name__ == "__main__":
    sys.exit(main())
