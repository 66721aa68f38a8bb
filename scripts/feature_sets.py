"""Check that every cargo configuration the test command builds asks for one feature set per dependency.

    python scripts/feature_sets.py

Cargo compiles a crate once per distinct feature set (and every crate above it again with it), so a small
crate such as `smallvec` with one feature more in one configuration recompiles ort and all of tract there.
This reads `cargo tree` (nothing is compiled) for each configuration the test command builds:

- the default build with its tests (nextest, doc tests, examples), and the workspace (clippy),
- the library without default features (its unit tests), and with each feature alone (type-checked),
- the Python package (the wheel, without dev-dependencies),

and fails, naming the crate and the configurations, where a crate that two configurations share is asked for
with different features. The pins that make them agree are in Cargo.toml. A few crates may differ, listed in
FACE_ONLY: the optional faces' own stack (clap, hyper, tower) and the host-side tools of the triton feature's
build script (prost-build's regex and indexmap) and of the tests' HTTP client (url's percent-encoding): no
dependency of the library sits above them, so a difference there recompiles only them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ("cli", "serve", "triton")
CONFIGS: dict[str, list[str]] = {
    "default (tests)": ["-e", "normal,build,dev"],
    "workspace (clippy)": ["--workspace", "-e", "normal,build,dev"],
    "no default features (tests)": ["--no-default-features", "-e", "normal,build,dev"],
    **{
        f"{feature} alone (tests)": [
            "--no-default-features",
            "--features",
            feature,
            "-e",
            "normal,build,dev",
        ]
        for feature in FEATURES
    },
    "python package (wheel)": ["-p", "diffir-python", "-e", "normal,build"],
}
# Crates no library dependency sits above (see the module text); their feature sets may differ.
FACE_ONLY = {
    "clap",
    "clap_builder",
    "hyper",
    "hyper-util",
    "tower",
    "slab",
    "regex",
    "regex-automata",
    "regex-syntax",
    "indexmap",
    "form_urlencoded",
    "percent-encoding",
}


def feature_sets(args: list[str]) -> dict[str, set[str]]:
    """Each package (name and version) with the feature sets it is built with (host and target may differ)."""
    out = subprocess.run(
        [
            "cargo",
            "tree",
            "--locked",
            *args,
            "--prefix",
            "none",
            "--format",
            "{p} [{f}]",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    packages: dict[str, set[str]] = {}
    for line in out.splitlines():
        line = line.replace(" (*)", "").replace(" (proc-macro)", "").strip()
        if not line or " [" not in line:
            continue
        name_version, features = line.split(" [", 1)
        if name_version.startswith("diffir"):
            continue
        name_version = " ".join(name_version.split()[:2])
        packages.setdefault(name_version, set()).add(features.rstrip("]"))
    return packages


def main() -> int:
    seen = {name: feature_sets(args) for name, args in CONFIGS.items()}
    problems = []
    for package in sorted(set().union(*seen.values())):
        if package.split()[0] in FACE_ONLY:
            continue
        asked = {name: frozenset(sets[package]) for name, sets in seen.items() if package in sets}
        if len(set(asked.values())) > 1:
            lines = "\n".join(f"    {name}: {sorted(sets)}" for name, sets in asked.items())
            problems.append(f"{package} is built with different features:\n{lines}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    shared = len(set().union(*seen.values()))
    print(
        f"feature sets: {shared} crates, {len(problems)} asked for with different features"
        f" across {len(CONFIGS)} configurations"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
