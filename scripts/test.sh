#!/usr/bin/env bash
# Install what the tests need and run every test: Python (exporter) and Rust (runtime).
#
#   scripts/test.sh                       (PYTHON=/usr/bin/python3 scripts/test.sh: another base interpreter)
#
# Creates (once, then reuses) a virtual environment in .venv from $PYTHON (default python3), installs the
# exporter with its test extras (torch, onnx, onnxruntime, nvidia-pytriton, tritonclient from PyPI) into it,
# installs the onnxruntime shared library for the runtime with the OpenVINO and WebGPU plugins and Mesa's
# software Vulkan driver for WebGPU (scripts/install-onnxruntime.sh --openvino --webgpu --lavapipe: from PyPI
# and Debian's archive, unpacked into its install folder, nothing installed system-wide), then runs ruff,
# pytest, cargo fmt/clippy checks and the Rust tests (the Triton tests start nvidia-pytriton's tritonserver
# on loopback), the library without default features (its dependencies checked, its unit tests run) and with
# each feature alone (built), then builds the container images with podman and runs them (scripts/image_test.py: podman,
# runc and debootstrap come from Debian's packages where missing; the base root filesystem and the wheels are
# cached in ~/.cache/diffir/image-wheels), after scripts/abuse.py replays hostile clients and input folders
# against the server and the CLI. ffmpeg (for the video tests) comes from Debian's packages where missing. Tests that need the official fixtures (../shared/fixtures/official), the Triton packages, the
# plugins or lavapipe say "skipped" where they are absent, and fail under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${PYTHON:-python3}"
VENV="${DIFFIR_VENV:-$PWD/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$BASE" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "error: $BASE cannot create a virtual environment; install python3-venv (apt-get install python3-venv)" >&2
    exit 1
  fi
  echo "== creating the virtual environment $VENV from $BASE"
  "$BASE" -m venv "$VENV"
fi
PY="$VENV/bin/python"
export PYTHON="$PY"
# A fresh clone builds once: incremental compilation state would only take disk (gigabytes of it) there.
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0
fi

echo "== installing the exporter and its test dependencies"
"$PY" -m pip install --quiet --disable-pip-version-check -e "export[test]"
echo "== installing the onnxruntime library, its OpenVINO and WebGPU plugins, and lavapipe for WebGPU"
scripts/install-onnxruntime.sh --openvino --webgpu --lavapipe

echo "== python: ruff + pytest"
(cd export && "$PY" -m ruff check . ../tests/fixtures ../scripts ../python && "$PY" -m ruff format --check . ../tests/fixtures ../scripts ../python)
(cd export && "$PY" -m pytest -q)

echo "== exporting the official fixtures for the Rust tests (cached per exporter version)"
"$PY" scripts/export_official.py
echo "== exporting real-size models with random weights for the activation tests (cached)"
"$PY" scripts/export_random.py

if ! command -v ffmpeg >/dev/null 2>&1 || ! command -v ffprobe >/dev/null 2>&1; then
  echo "== installing ffmpeg from Debian's packages (the video tests run it)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg
fi

echo "== rust: fmt, clippy, tests"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast
fi
cargo test --locked --doc

echo "== rust: the library without features and with each feature alone, its docs, and the examples"
# A library user who turns the default features off gets no command line, server or gRPC stack (prost stays:
# tract reads ONNX files through it).
FEATURELESS="$(cargo tree --locked --no-default-features -e normal --prefix none --format '{p}' | cut -d' ' -f1 | sort -u)"
for crate in clap indicatif axum hyper tokio prometheus tonic; do
  if grep -qx "$crate" <<<"$FEATURELESS"; then
    echo "error: the library without default features depends on $crate (cargo tree --no-default-features -e normal -i $crate)" >&2
    exit 1
  fi
done
# The unit tests without features; with each feature alone, the library and its unit tests are built (each
# feature set recompiles most dependencies, so they are type-checked rather than run again: the default build
# above runs them all).
cargo test --locked --lib --no-default-features
for feature in cli serve triton; do
  cargo check --locked --lib --tests --no-default-features --features "$feature"
done
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps
EXAMPLES_OUT="$(mktemp -d)"
trap 'rm -rf "$EXAMPLES_OUT"' EXIT
cargo run --locked --quiet --example restore -- tests/fixtures/bundles/sr_x4/input.png "$EXAMPLES_OUT/restored.png"
test -s "$EXAMPLES_OUT/restored.png"
cargo run --locked --quiet --example in_memory -- tests/fixtures/images/rgba.png

echo "== python package: the wheel (maturin through pip, dev profile), its tests, the wheel in a fresh venv"
# pip builds ./python as users do (PEP 517, maturin from PyPI); MATURIN_PEP517_ARGS picks the dev profile so
# the dependencies already built above for the library without default features are reused (a release
# build would compile everything again). python/tests/test_wheel.py installs it into a fresh venv.
WHEEL_DIR=target/python-wheel
rm -rf "$WHEEL_DIR"
MATURIN_PEP517_ARGS="--profile dev" "$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps \
  -w "$WHEEL_DIR" ./python
WHEEL="$(ls "$WHEEL_DIR"/diffir-*.whl)"
echo "built $WHEEL: $(( $(stat -c %s "$WHEEL") / 1048576 )) MiB"
"$PY" -m pip install --quiet --disable-pip-version-check "$WHEEL[test]"
"$PY" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$WHEEL"
DIFFIR_WHEEL="$PWD/$WHEEL" DIFFIR_BIN="$PWD/target/debug/diffir" "$PY" -m pytest -q python/tests

echo "== reliability: hostile clients and input folders against the server and the CLI (scripts/abuse.py)"
"$PY" scripts/abuse.py --binary target/debug/diffir

echo "== containers: build the cpu and cuda images (podman) and test them by running them"
"$PY" scripts/image_test.py --binary target/debug/diffir
