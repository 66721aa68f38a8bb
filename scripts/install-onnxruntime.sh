#!/usr/bin/env bash
# Install the onnxruntime shared library the `diffir` runtime loads at run time.
#
# It comes from the PyPI wheel onnxruntime==1.31.1 (CPU). The library is copied to
# $DIFFIR_ORT_DIR (default ~/.local/share/diffir/onnxruntime), where `diffir` looks for it;
# ORT_DYLIB_PATH=/path/to/libonnxruntime.so overrides the search.
#
# Usage: scripts/install-onnxruntime.sh          (prints the installed library's path)
set -euo pipefail
# The version is pinned in one place, the exporter's dependencies (the Rust runtime's ORT_VERSION is tested
# against the same pin).
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VERSION=$(sed -n 's/.*"onnxruntime==\([0-9.]*\)".*/\1/p' "$ROOT/export/pyproject.toml")
[ -n "$VERSION" ] || { echo "error: no onnxruntime==X pin in $ROOT/export/pyproject.toml" >&2; exit 1; }
LIB="libonnxruntime.so.$VERSION"
DEST="${DIFFIR_ORT_DIR:-$HOME/.local/share/diffir/onnxruntime}"
PY="${PYTHON:-python3}"

if [ -f "$DEST/$LIB" ]; then
  echo "$DEST/$LIB"
  exit 0
fi
mkdir -p "$DEST"

# An installed onnxruntime of the right version already carries the library.
src=$("$PY" - "$VERSION" "$LIB" <<'PYEOF' 2>/dev/null || true
import os, sys
try:
    import onnxruntime
except ImportError:
    sys.exit(0)
path = os.path.join(os.path.dirname(onnxruntime.__file__), "capi", sys.argv[2])
if onnxruntime.__version__ == sys.argv[1] and os.path.isfile(path):
    print(path)
PYEOF
)
if [ -z "$src" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "onnxruntime==$VERSION"
  whl=$(ls "$tmp"/onnxruntime-*.whl)
  "$PY" - "$whl" "$LIB" "$tmp" <<'PYEOF'
import sys, zipfile
whl, lib, out = sys.argv[1:4]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith("/capi/" + lib))
    z.extract(name, out)
    print(f"{out}/{name}")
PYEOF
  src=$(find "$tmp" -name "$LIB" | head -n 1)
fi
cp "$src" "$DEST/$LIB.partial"
mv "$DEST/$LIB.partial" "$DEST/$LIB"
echo "$DEST/$LIB"
