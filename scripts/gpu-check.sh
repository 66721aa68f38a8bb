#!/usr/bin/env bash
# The GPU check, in one command on a machine with an NVIDIA GPU, PyTorch with CUDA, and onnxruntime-gpu 1.31.1:
# ORT_DYLIB_PATH pointing at its libonnxruntime.so.1.31.1 with libonnxruntime_providers_cuda.so beside it, CUDA 13
# and cuDNN 9 on LD_LIBRARY_PATH (PyTorch's own nvidia/* wheels will do), and its Python module importable or
# given as ORT_PY_TARBALL. (On a machine that cannot reach PyPI, ship the wheel's libraries in pieces and set
# those variables from where they land.)
#
#   bash scripts/gpu-check.sh OUT_DIR [DIFFIR_BINARY] [ORT_PY_TARBALL]
#
# 1. scripts/gpu_study.py: where onnxruntime CUDA's time goes on the real-size realsr_x4 backbone (per-op
#    micro-benchmarks, steady-state kernel profiles) and which graph/option variant is fastest; it exports a
#    realsr_x4 bundle (random weights) with the fastest exact variant.
# 2. scripts/gpu_check.py: diffir itself on that bundle: parity of onnxruntime CUDA (and TensorRT where its
#    libraries exist) against the CPU result, and PyTorch eager vs diffir at LR 64, 128 and 256.
# ORT_PY_TARBALL (optional): onnxruntime-gpu's Python package without its CUDA provider (tar.xz), for step 1;
# the provider staged for diffir is linked into it.
set -uo pipefail
OUT=${1:?usage: gpu-check.sh OUT_DIR [DIFFIR_BINARY] [ORT_PY_TARBALL]}
BIN=${2:-target/release/diffir}
PYTAR=${3:-}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
if [ -n "$PYTAR" ]; then
    SITE=/tmp/ort-site
    mkdir -p $SITE && tar -xJf "$PYTAR" -C $SITE
    ln -sf "$(dirname "$ORT_DYLIB_PATH")/libonnxruntime_providers_cuda.so" $SITE/onnxruntime/capi/
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.get_available_providers())'
BUNDLE=/tmp/realsr_x4-random
# STUDY_ARGS: e.g. --skip-micro (the per-op table) or --grouped 8 16 (grouped-depthwise variants)
timeout "${STUDY_TIMEOUT:-300}" python3 scripts/gpu_study.py --json "$OUT/gpu_study.json" --trace-dir "$OUT" \
    --bundle-out $BUNDLE ${STUDY_ARGS:-} 2>&1 | grep -v 'No registered plugin EP' | tee "$OUT/gpu_study.log"
OPTS=()
if [ -f "$OUT/gpu_study.json" ]; then
    # the best exact variant's CUDA options, for diffir
    while read -r kv; do [ -n "$kv" ] && OPTS+=(--cuda-option "$kv"); done < <(python3 -c '
import json, sys
best = json.load(open(sys.argv[1]))["best"]
print("\n".join(f"{k}={v}" for k, v in best[2].items()))' "$OUT/gpu_study.json")
fi
if [ -f $BUNDLE/bundle.yaml ]; then
    timeout "${CHECK_TIMEOUT:-130}" python3 scripts/gpu_check.py --bundle $BUNDLE --binary "$BIN" "${OPTS[@]}" 2>&1 \
        | tee "$OUT/gpu_check.log"
fi
