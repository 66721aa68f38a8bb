#!/usr/bin/env bash
# Install the onnxruntime shared library the `diffir` runtime loads at run time, and on request the plugin
# execution providers and a software Vulkan driver.
#
# The library comes from the PyPI wheel onnxruntime==1.31.1 (CPU). It is copied to $DIFFIR_ORT_DIR
# (default ~/.local/share/diffir/onnxruntime), where `diffir` looks for it; ORT_DYLIB_PATH=/path/to/
# libonnxruntime.so overrides the search.
#
#   --openvino   the OpenVINO plugin (onnxruntime-ep-openvino, PyPI) into $DIFFIR_ORT_DIR/onnxruntime_ep_openvino
#                (`--backend ort-openvino`; it offers devices on Intel hardware only)
#   --webgpu     the WebGPU plugin (onnxruntime-ep-webgpu, PyPI) into $DIFFIR_ORT_DIR/onnxruntime_ep_webgpu
#                (`--backend ort-webgpu`; needs a Vulkan driver and libvulkan.so.1)
#   --lavapipe   Mesa 25's software Vulkan driver (lavapipe, Debian bookworm-backports) and the Vulkan loader,
#                fetched with `apt-get download` and unpacked into $DIFFIR_ORT_DIR/lavapipe (never installed
#                system-wide): a GPU-less adapter for testing WebGPU. Debian/Ubuntu (apt-get, dpkg-deb) only.
#                Use it with LD_LIBRARY_PATH=$DIFFIR_ORT_DIR/lavapipe/lib
#                VK_DRIVER_FILES=$DIFFIR_ORT_DIR/lavapipe/lvp_icd.json ORT_WEBGPU_EP_ALLOW_SOFTWARE_ADAPTER=1
#
# Usage: scripts/install-onnxruntime.sh [--openvino] [--webgpu] [--lavapipe]   (prints what it installed)
set -euo pipefail
# The version is pinned in one place, the exporter's dependencies (the Rust runtime's ORT_VERSION is tested
# against the same pin).
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VERSION=$(sed -n 's/.*"onnxruntime==\([0-9.]*\)".*/\1/p' "$ROOT/export/pyproject.toml")
[ -n "$VERSION" ] || { echo "error: no onnxruntime==X pin in $ROOT/export/pyproject.toml" >&2; exit 1; }
LIB="libonnxruntime.so.$VERSION"
DEST="${DIFFIR_ORT_DIR:-$HOME/.local/share/diffir/onnxruntime}"
PY="${PYTHON:-python3}"

install_core() {
if [ -f "$DEST/$LIB" ]; then
  echo "$DEST/$LIB"
  return 0
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
rm -rf "${tmp:-/nonexistent}"
}

# A plugin's pip package folder, copied whole (the OpenVINO plugin finds OpenVINO beside it).
install_plugin() {
  local req="$1" pkg="$2" lib="$3"
  if [ -f "$DEST/$pkg/$lib" ]; then
    echo "$DEST/$pkg/$lib"
    return 0
  fi
  local tmp
  tmp=$(mktemp -d)
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "$req"
  "$PY" - "$tmp" "$pkg" <<'PYEOF'
import glob, sys, zipfile
tmp, pkg = sys.argv[1:3]
(whl,) = glob.glob(f"{tmp}/*.whl")
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        if info.filename.startswith(pkg + "/"):
            z.extract(info, f"{tmp}/out")
PYEOF
  mkdir -p "$DEST"
  rm -rf "$DEST/$pkg.partial" "$DEST/$pkg"
  mv "$tmp/out/$pkg" "$DEST/$pkg.partial"
  chmod +x "$DEST/$pkg.partial/"*.so*
  mv "$DEST/$pkg.partial" "$DEST/$pkg"
  rm -rf "$tmp"
  echo "$DEST/$pkg/$lib"
}

# lavapipe from bookworm-backports with the Vulkan loader, unpacked into $DEST/lavapipe.
install_lavapipe() {
  local out="$DEST/lavapipe"
  if [ -f "$out/lvp_icd.json" ]; then
    echo "$out/lvp_icd.json"
    return 0
  fi
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || {
    echo "error: --lavapipe needs apt-get and dpkg-deb (Debian or Ubuntu)" >&2
    return 1
  }
  local tmp keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [ -f "$keyring" ] || { echo "error: --lavapipe needs Debian's archive keyring $keyring" >&2; return 1; }
  tmp=$(mktemp -d)
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/debs" "$tmp/root"
  printf 'deb [signed-by=%s] http://deb.debian.org/debian %s main\n' \
    "$keyring" bookworm-backports "$keyring" bookworm >"$tmp/sources.list"
  local apt=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o Debug::NoLocking=1
    -o APT::Sandbox::User=root -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null)
  apt-get "${apt[@]}" -qq update
  local mesa
  mesa=$(apt-cache "${apt[@]}" madison mesa-vulkan-drivers | awk -F'|' '/bookworm-backports/ {gsub(/ /, "", $2); print $2; exit}')
  [ -n "$mesa" ] || { echo "error: no mesa-vulkan-drivers in bookworm-backports" >&2; return 1; }
  # The driver, the loader, and those of the driver's dependencies this system lacks.
  local pkgs=("mesa-vulkan-drivers=$mesa" libvulkan1) dep
  for dep in $(apt-cache "${apt[@]}" show "mesa-vulkan-drivers=$mesa" | sed -n 's/^Depends: //p' | tr ',' '\n' \
    | sed 's/[ (].*//; s/^ *//' | sort -u); do
    [ "$dep" = libvulkan1 ] && continue
    dpkg-query -W -f='${Status}' "$dep" 2>/dev/null | grep -q "install ok installed" || pkgs+=("$dep")
  done
  (cd "$tmp/debs" && apt-get "${apt[@]}" -qq download "${pkgs[@]}")
  for deb in "$tmp"/debs/*.deb; do dpkg-deb -x "$deb" "$tmp/root"; done
  rm -rf "$out.partial" "$out"
  mkdir -p "$out.partial"
  cp -a "$tmp/root/usr/lib/x86_64-linux-gnu" "$out.partial/lib"
  printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "%s", "api_version": "1.4.305"}}\n' \
    "$out/lib/libvulkan_lvp.so" >"$out.partial/lvp_icd.json"
  local missing
  missing=$(LD_LIBRARY_PATH="$out.partial/lib" ldd "$out.partial/lib/libvulkan_lvp.so" | grep "not found" || true)
  rm -rf "$tmp"
  if [ -n "$missing" ]; then
    echo "error: lavapipe's libraries are missing here: $missing" >&2
    rm -rf "$out.partial"
    return 1
  fi
  mv "$out.partial" "$out"
  echo "$out/lvp_icd.json"
}

# The plugin pins (the runtime's backend::plugin::Plugin::requirement is tested against them).
OPENVINO_REQ="onnxruntime-ep-openvino==1.8.1"
WEBGPU_REQ="onnxruntime-ep-webgpu==0.4.0"

install_core
for arg in "$@"; do
  case "$arg" in
    --openvino) install_plugin "$OPENVINO_REQ" onnxruntime_ep_openvino libonnxruntime_providers_openvino_plugin.so ;;
    --webgpu) install_plugin "$WEBGPU_REQ" onnxruntime_ep_webgpu libonnxruntime_providers_webgpu.so ;;
    --lavapipe) install_lavapipe ;;
    *) echo "error: unknown option $arg (--openvino, --webgpu, --lavapipe)" >&2; exit 2 ;;
  esac
done
