"""Export every official fixture checkpoint (../shared/fixtures/official) into the cache the Rust tests read.

  python scripts/export_official.py [--official DIR] [--out target/official-bundles]

The test command runs this before `cargo test`, so the slow PyTorch exports happen here, once per exporter
version: bundles go to OUT/HASH/NAME, where HASH is the exporter-source hash that tests/it/official.rs
computes the same way (SHA-256 over each .py file under export/diffir_export, sorted by relative path, as
path NUL content NUL; the first 16 hex digits). Bundles already there are kept.
"""

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def exporter_hash() -> str:
    src = ROOT / "export" / "diffir_export"
    h = hashlib.sha256()
    for path in sorted(src.rglob("*.py"), key=lambda p: p.relative_to(src).as_posix()):
        h.update(path.relative_to(src).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", type=Path, default=ROOT.parent / "shared" / "fixtures" / "official")
    ap.add_argument("--out", type=Path, default=ROOT / "target" / "official-bundles")
    args = ap.parse_args()
    if not args.official.is_dir():
        print(f"official fixtures not found at {args.official}: nothing to export")
        return 0
    out = args.out / exporter_hash()
    for ckpt in sorted(args.official.glob("*/checkpoint.pth")):
        dest = out / ckpt.parent.name
        if (dest / "bundle.yaml").is_file():
            continue
        print(f"exporting {ckpt.parent.name} -> {dest}", flush=True)
        cmd = [sys.executable, "-m", "diffir_export", "export", "--checkpoint", str(ckpt), "--out", str(dest)]
        subprocess.run([*cmd, "--overwrite"], check=True, cwd=ROOT / "export")
    return 0


if __name__ == "__main__":
    sys.exit(main())
