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
# each feature alone (type-checked), the Python package's wheel and tests, then scripts/abuse.py (hostile
# clients and input folders against the server and the CLI) and the container images (scripts/image_test.py:
# built from the debug binary with podman and run). ffmpeg, podman, runc and debootstrap come from Debian's
# packages where missing; the images' base root filesystem and wheels are cached in
# ~/.cache/diffir/image-wheels, the exported test bundles in ~/.cache/diffir/exports. Tests that need the
# official fixtures (../shared/fixtures/official), the Triton packages, the plugins or lavapipe say "skipped"
# where they are absent, and fail under CI=true.
#
# The downloads (Python packages, Debian packages, the images' base and wheels) run in the background while
# the first compiles run; the compiles themselves run one after another (2 cores). Every configuration shares
# one build of the dependency tree (Cargo.toml's feature pins, checked by scripts/feature_sets.py). At the end
# it prints each step's wall time and the total, and a warning naming the slowest steps when the total is over
# the 40-minute budget ($DIFFIR_TEST_BUDGET seconds, default 2400).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="${PYTHON:-python3}"
VENV="${DIFFIR_VENV:-$PWD/.venv}"
BUDGET="${DIFFIR_TEST_BUDGET:-2400}"
LOGS="$(mktemp -d)"
# A fresh clone builds once: incremental compilation state would only take disk (gigabytes of it) there.
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0
fi

# ---- step timing: `step NAME` ends the step before it and starts NAME; the table is printed on every exit.
RUN_T0=$(date +%s)
STEP=""
STEP_T0=0
TIMES=()
step() {
  end_step
  STEP="$1"
  STEP_T0=$(date +%s)
  echo "== $STEP"
}
end_step() {
  if [ -n "$STEP" ]; then
    TIMES+=("$(($(date +%s) - STEP_T0))|$STEP|$(units_now)")
    STEP=""
  fi
}
# Compiled units so far (cargo keeps one fingerprint folder per unit): a step that shares the dependency
# build adds few.
units_now() { { find target/debug/.fingerprint -mindepth 1 -maxdepth 1 2>/dev/null || true; } | wc -l; }
UNITS_AT_START=$(units_now)
print_table() {
  local rc=$?
  set +e
  local total=$(($(date +%s) - RUN_T0)) last=$UNITS_AT_START row secs name units
  [ -n "$STEP" ] && STEP="$STEP (exit $rc)"
  end_step
  echo
  echo "== time table ($( [ "$rc" = 0 ] && echo passed || echo "FAILED, exit $rc"))"
  printf '| %-72s | %9s | %6s |\n' step "wall" units
  printf '|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..74})" "-----------" "--------"
  for row in "${TIMES[@]}"; do
    IFS='|' read -r secs name units <<<"$row"
    printf '| %-72s | %4dm %02ds | %6s |\n' "$name" $((secs / 60)) $((secs % 60)) "+$((units - last))"
    last=$units
  done
  for row in "${BACKGROUND[@]}"; do
    IFS='|' read -r secs name <<<"$row"
    printf '| %-72s | %4dm %02ds | %6s |\n' "(beside the compiles) $name" $((secs / 60)) $((secs % 60)) ""
  done
  printf '| %-72s | %4dm %02ds | %6s |\n' total $((total / 60)) $((total % 60)) "$(($(units_now) - UNITS_AT_START))"
  if [ "$total" -gt "$BUDGET" ]; then
    echo "warning: the test command took $((total / 60)) m $((total % 60)) s, over its budget of $((BUDGET / 60)) minutes; slowest steps:"
    printf '%s\n' "${TIMES[@]}" | sort -t'|' -k1,1nr | head -3 | awk -F'|' '{printf "warning:   %dm %02ds  %s\n", $1/60, $1%60, $2}'
  fi
  # A background job not waited for (the run failed first) is stopped.
  for name in "${!JOBS[@]}"; do
    kill "${JOBS[$name]}" 2>/dev/null && echo "stopped the background job $name (not waited for)"
  done
  rm -rf "$LOGS"
}
BACKGROUND=()
trap print_table EXIT

# ---- background jobs: `background NAME FUNCTION` starts it with its output in a log; `await NAME` waits for it,
# prints its log and fails where it failed.
declare -A JOBS
background() {
  local name="$1"
  shift
  # The subshell keeps errexit (set -e above), so the job stops at its first failing command with that
  # status; its time is written on the way out.
  (
    t0=$(date +%s)
    trap 'echo "$(($(date +%s) - t0))" >"$LOGS/$name.secs"' EXIT
    "$@" >"$LOGS/$name.log" 2>&1
  ) &
  JOBS[$name]=$!
}
await() {
  local name="$1" rc=0
  wait "${JOBS[$name]}" || rc=$?
  unset "JOBS[$name]"
  sed "s/^/[$name] /" "$LOGS/$name.log"
  BACKGROUND+=("$(cat "$LOGS/$name.secs" 2>/dev/null || echo 0)|$name")
  if [ "$rc" != 0 ]; then
    echo "error: $name failed (exit $rc)" >&2
    exit "$rc"
  fi
}

step "the virtual environment"
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$BASE" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "error: $BASE cannot create a virtual environment; install python3-venv (apt-get install python3-venv)" >&2
    exit 1
  fi
  echo "creating the virtual environment $VENV from $BASE"
  "$BASE" -m venv "$VENV"
fi
PY="$VENV/bin/python"
export PYTHON="$PY"

python_packages() {
  echo "installing the exporter and its test dependencies"
  # A wheel that arrives damaged (pip checks its hash) is fetched again once.
  "$PY" -m pip install --quiet --disable-pip-version-check -e "export[test]" \
    || { echo "retrying the install"; sleep 5; "$PY" -m pip install --quiet --disable-pip-version-check -e "export[test]"; }
  echo "installing the onnxruntime library, its OpenVINO and WebGPU plugins, and lavapipe for WebGPU"
  scripts/install-onnxruntime.sh --openvino --webgpu --lavapipe
}
system_packages() {
  # ffmpeg for the video tests; podman, runc and debootstrap for the images (scripts/image_test.py).
  local want=() tool
  for tool in ffmpeg:ffmpeg ffprobe:ffmpeg podman:podman runc:runc debootstrap:debootstrap; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || want+=("${tool#*:}")
  done
  if [ "$(id -u)" != 0 ]; then
    [ "${#want[@]}" = 0 ] || echo "not root: leaving ${want[*]} uninstalled (the tests that need them say so)"
    return 0
  fi
  if [ "${#want[@]}" -gt 0 ]; then
    echo "installing $(printf '%s\n' "${want[@]}" | sort -u | tr '\n' ' ')from Debian's packages"
    apt-get update -qq
    # shellcheck disable=SC2046
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${want[@]}" | sort -u)
  fi
  echo "the images' base and onnxruntime wheels (cached)"
  scripts/local-base-image.sh
  scripts/build-image.sh --fetch --cuda
}
background python-packages python_packages
background system-packages system_packages

step "rust: fmt and clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The feature pins of Cargo.toml: every configuration below asks for one feature set per dependency.
python3 scripts/feature_sets.py

step "rust: build the tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-run
else
  cargo test --locked --no-run
fi

step "rust: the library without features (tests built) and with each feature alone (checked), its docs"
# A library user who turns the default features off gets no command line, server or gRPC stack (prost stays:
# tract reads ONNX files through it).
FEATURELESS="$(cargo tree --locked --no-default-features -e normal --prefix none --format '{p}' | cut -d' ' -f1 | sort -u)"
for crate in clap indicatif axum hyper tokio prometheus tonic; do
  if grep -qx "$crate" <<<"$FEATURELESS"; then
    echo "error: the library without default features depends on $crate (cargo tree --no-default-features -e normal -i $crate)" >&2
    exit 1
  fi
done
cargo test --locked --lib --no-default-features --no-run
# With each feature alone the library and its unit tests are type-checked (the default build runs them all).
for feature in cli serve triton; do
  cargo check --locked --lib --tests --no-default-features --features "$feature"
done
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps
cargo build --locked --examples

step "python: the exporter's packages, the onnxruntime library and plugins (waited for)"
await python-packages

step "python: ruff + pytest"
(cd export && "$PY" -m ruff check . ../tests/fixtures ../scripts ../python && "$PY" -m ruff format --check . ../tests/fixtures ../scripts ../python)
(cd export && "$PY" -m pytest -q)

step "exports: the official fixtures and the real-size random models (cached)"
"$PY" scripts/export_official.py
"$PY" scripts/export_random.py

step "system: ffmpeg, podman, the images' base and wheels (waited for)"
await system-packages

step "rust: nextest run"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast
fi

step "rust: doc tests, the library's unit tests without features, the examples"
cargo test --locked --doc
cargo test --locked --lib --no-default-features
EXAMPLES_OUT="$LOGS/examples"
mkdir -p "$EXAMPLES_OUT"
cargo run --locked --quiet --example restore -- tests/fixtures/bundles/sr_x4/input.png "$EXAMPLES_OUT/restored.png"
test -s "$EXAMPLES_OUT/restored.png"
cargo run --locked --quiet --example in_memory -- tests/fixtures/images/rgba.png

step "python package: the wheel (maturin through pip, dev profile)"
# pip builds ./python as users do (PEP 517, maturin from PyPI); MATURIN_PEP517_ARGS picks the dev profile so
# the dependencies built above are reused (Cargo.toml's feature pins make the package's feature sets the
# library's; a release build would compile everything again). python/tests/test_wheel.py installs it into a
# fresh venv.
WHEEL_DIR=target/python-wheel
rm -rf "$WHEEL_DIR"
MATURIN_PEP517_ARGS="--profile dev" "$PY" -m pip wheel --quiet --disable-pip-version-check --no-deps \
  -w "$WHEEL_DIR" ./python
WHEEL="$(ls "$WHEEL_DIR"/diffir-*.whl)"
echo "built $WHEEL: $(($(stat -c %s "$WHEEL") / 1048576)) MiB"
"$PY" -m pip install --quiet --disable-pip-version-check "$WHEEL[test]"
"$PY" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$WHEEL"

step "python package: its tests"
DIFFIR_WHEEL="$PWD/$WHEEL" DIFFIR_BIN="$PWD/target/debug/diffir" "$PY" -m pytest -q python/tests

step "reliability: hostile clients and input folders (scripts/abuse.py)"
"$PY" scripts/abuse.py --binary target/debug/diffir

step "containers: the cpu and cuda images, built from the debug binary and run"
"$PY" scripts/image_test.py --binary target/debug/diffir

# How often the heavy crates were compiled in this run (check and build: twice each on a fresh clone).
step "compiled units of the heavy crates"
for crate in tract-core tract-onnx ort image tokio; do
  n=$({ find target/debug/.fingerprint -mindepth 1 -maxdepth 1 -regextype posix-extended \
    -regex ".*/$crate-[0-9a-f]{16}" 2>/dev/null || true; } | wc -l)
  echo "$crate: $n units"
  if [ "$UNITS_AT_START" = 0 ] && [ "$n" -gt 2 ]; then
    echo "error: $crate was compiled $n times on a fresh clone (at most twice: checked and built); see scripts/feature_sets.py" >&2
    exit 1
  fi
done
end_step
