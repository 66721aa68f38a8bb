"""The cache of exported test bundles, shared by every clone on a machine (scripts/export_official.py and
scripts/export_random.py): a bundle is exported once per exporter version into
$DIFFIR_EXPORT_CACHE (default ~/.cache/diffir/exports)/KEY/NAME and copied from there into the clone's
target/, where the Rust tests read it. KEY starts with the exporter-source hash, so a changed exporter never
reuses a stale bundle.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def exporter_hash() -> str:
    """SHA-256 over each .py file under export/diffir_export, sorted by relative path, as path NUL content NUL;
    the first 16 hex digits (tests/it/official.rs computes the same)."""
    src = ROOT / "export" / "diffir_export"
    h = hashlib.sha256()
    for path in sorted(src.rglob("*.py"), key=lambda p: p.relative_to(src).as_posix()):
        h.update(path.relative_to(src).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def files_hash(*paths: Path) -> str:
    """The first 12 hex digits of SHA-256 over the files' bytes (each folder's files sorted by name)."""
    h = hashlib.sha256()
    for path in paths:
        for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
            if f.is_file():
                h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "diffir" / "exports"
    return Path(os.environ.get("DIFFIR_EXPORT_CACHE", default))


def cached(key: str, name: str, dest: Path, export: Callable[[Path], None]) -> None:
    """Put the bundle KEY/NAME at `dest`: exported by `export(folder)` into the cache where it is not there yet,
    then copied. A bundle already at `dest` from the same KEY is kept."""
    stamp = dest / ".export-key"
    if (dest / "bundle.yaml").is_file() and stamp.is_file() and stamp.read_text() == key:
        return
    entry = cache_root() / key / name
    if not (entry / "bundle.yaml").is_file():
        partial = entry.with_name(f".{name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        export(partial)
        shutil.rmtree(entry, ignore_errors=True)
        partial.rename(entry)
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(entry, dest)
    stamp.write_text(key)
