#!/usr/bin/env bash
# The GPU check, in one command on a machine with an NVIDIA GPU, PyTorch with CUDA, and onnxruntime-gpu 1.31.1:
# ORT_DYLIB_PATH pointing at its libonnxruntime.so.1.31.1 with libonnxruntime_providers_cuda.so beside it, CUDA 13
# and cuDNN 9 on LD_LIBRARY_PATH (PyTorch's own nvidia/* wheels will do), and its Python module importable or
# given as ORT_PY_TARBALL. (On a machine that cannot reach PyPI, ship the wheel's libraries in pieces and set
# those variables from where they land.)
#
#   bash scripts/gpu-check.sh OUT_DIR [DIFFIR_BINARY] [ORT_PY_TARBALL]
#
# Within 8 minutes, whole:
# 0. Preflight (at most 30 s): `diffir info --backend ort-cuda` must name the CUDA provider and its device;
#    otherwise the script stops with that output (which lists the CUDA libraries found and where from).
# 1. scripts/gpu_check.py (at most CHECK_TIMEOUT, default 420 s): exports a real-size realsr_x4 bundle with
#    random weights and its fp16 backbone, checks diffir's parity on CUDA against the CPU result (fp32, whole
#    image and the bound fixed-shape path of --tile 64 --tile-batch 4 with and without --cuda-graph; fp16
#    against fp32), prints one table of PyTorch eager fp32 / fp16 autocast vs diffir fp32 / fp16 at LR 64, 128
#    and 256, and the output megapixels per second of a 2048x2048 -> 8192x8192 restore with --tile auto (the
#    tile and batch it chose, and the peak device memory nvidia-smi saw), for diffir and for PyTorch running
#    the same tiles one at a time.
# 2. With STUDY=1 first: scripts/studies/gpu_study.py, where onnxruntime CUDA's time goes (per-op micro-benchmarks,
#    kernel profiles, graph and option variants); it adds minutes, so the default run leaves it out.
# Every diffir call's command line, stdout and stderr are saved under OUT_DIR/logs.
# CHECK_ARGS: e.g. --cuda-option KEY=VALUE, passed to diffir.
# ORT_PY_TARBALL (optional): onnxruntime-gpu's Python package without its CUDA provider (tar.xz), for step 2;
# the provider staged for diffir is linked into it.
set -uo pipefail
OUT=${1:?usage: gpu-check.sh OUT_DIR [DIFFIR_BINARY] [ORT_PY_TARBALL]}
BIN=${2:-target/release/diffir}
PYTAR=${3:-}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT/logs"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
# Preflight: the CUDA provider must start, on a named device, before minutes go into the rest.
timeout 30 "$BIN" info --backend ort-cuda --tile 64 --tile-batch 1 >"$OUT/logs/00-preflight.log" 2>&1
status=$?
if [ $status -ne 0 ] || ! grep -q "(CUDA, device [0-9]" "$OUT/logs/00-preflight.log"; then
    echo "preflight failed (exit $status): diffir info --backend ort-cuda does not run on the CUDA provider"
    cat "$OUT/logs/00-preflight.log"
    exit 1
fi
grep -E "^(runs on|backend|gpu|cuda library):" "$OUT/logs/00-preflight.log"
if [ -n "$PYTAR" ]; then
    SITE=/tmp/ort-site
    mkdir -p $SITE && tar -xJf "$PYTAR" -C $SITE
    ln -sf "$(dirname "$ORT_DYLIB_PATH")/libonnxruntime_providers_cuda.so" $SITE/onnxruntime/capi/
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.get_available_providers())'
BUNDLE=/tmp/realsr_x4-random
if [ "${STUDY:-0}" = 1 ]; then
    # STUDY_ARGS: e.g. --skip-micro (the per-op table) or --grouped 8 16 (grouped-depthwise variants)
    timeout "${STUDY_TIMEOUT:-300}" python3 scripts/studies/gpu_study.py --json "$OUT/gpu_study.json" --trace-dir "$OUT" \
        ${STUDY_ARGS:-} 2>&1 | grep -v 'No registered plugin EP' | tee "$OUT/gpu_study.log"
fi
timeout "${CHECK_TIMEOUT:-420}" python3 scripts/gpu_check.py --bundle $BUNDLE --binary "$BIN" --logs "$OUT/logs" \
    ${CHECK_ARGS:-} 2>&1 \
    | tee "$OUT/gpu_check.log"
