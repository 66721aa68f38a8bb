//! Starting on a machine with a GPU, checked without one: a fake `nvidia-smi` on PATH stands for the GPU,
//! and small shared libraries built with the C compiler stand for the CUDA libraries. `auto` never runs on
//! the CPU silently where a GPU is there, `--require-gpu` refuses, `diffir info` says which CUDA libraries
//! were loaded from where and which devices CUDA shows, and how much memory a backbone call needs.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use diffir::Precision;

use crate::common::*;

const QUERY: &str = "0, GPU-aaaa1111-0000-0000-0000-000000000000, NVIDIA H100 80GB HBM3, 81559, 81000\n\
                     1, GPU-bbbb2222-0000-0000-0000-000000000000, NVIDIA H200, 143771, 140000\n";

/// A folder holding a fake `nvidia-smi` that lists two GPUs; PATH with it first.
fn fake_gpu_path(dir: &Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("nvidia-smi");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nif [ \"$1\" = -L ]; then exit 0; fi\nprintf '%s' '{QUERY}'\n"),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default())
}

/// Whether this machine has a GPU of its own (then "no GPU" cases cannot be checked here).
fn real_gpu() -> bool {
    diffir::internal::gpus::Devices::probe().any()
}

fn restore(tmp: &Path, extra: &[&str], envs: &[(&str, &str)]) -> (std::process::Output, PathBuf) {
    let input = bundles_dir().join("sr_x4/input.png");
    let out = tmp.join("out.png");
    let model = bundles_dir().join("sr_x4");
    let mut args = vec![
        "restore",
        s(&input),
        "-o",
        s(&out),
        "--model",
        s(&model),
        "--threads",
        "1",
    ];
    args.extend_from_slice(extra);
    (diffir(&args, envs), out)
}

/// The defect: with a GPU there but no working CUDA provider, `auto` ran on the CPU and said nothing.
#[test]
fn auto_with_a_gpu_but_no_cuda_provider_warns_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let path = fake_gpu_path(tmp.path());
    let (o, out) = restore(tmp.path(), &[], &[("PATH", &path)]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(out.is_file());
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning:")).collect();
    let gpu: Vec<&&str> = warnings.iter().filter(|l| l.contains("NVIDIA GPU")).collect();
    assert_eq!(gpu.len(), 1, "{err}");
    let line = gpu[0];
    assert!(line.contains("NVIDIA H100 80GB HBM3"), "names the GPU: {line}");
    assert!(
        line.contains("runs on onnxruntime CPU") || line.contains("runs on tract"),
        "{line}"
    );
    assert!(line.contains("CUDA did not start: "), "{line}");
    // It says how to fix it: the GPU package, or the CUDA libraries.
    assert!(line.contains("onnxruntime-gpu"), "{line}");
    // Without the GPU there is nothing to warn about.
    if !real_gpu() {
        let (o, _) = restore(&tmp.path().join("plain"), &[], &[]);
        assert!(!stderr(&o).contains("NVIDIA GPU"), "{}", stderr(&o));
    }
}

#[test]
fn require_gpu_refuses_to_run_on_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let path = fake_gpu_path(tmp.path());
    let (o, out) = restore(tmp.path(), &["--require-gpu"], &[("PATH", &path)]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!out.exists());
    assert!(
        err.contains("--require-gpu") && err.contains("CUDA did not start"),
        "{err}"
    );
    if !real_gpu() {
        let (o, out) = restore(tmp.path(), &["--require-gpu"], &[]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("not on an NVIDIA GPU"), "{}", stderr(&o));
        assert!(!out.exists());
    }
}

/// Shared libraries with the CUDA libraries' names and sonames, built with the C compiler.
fn fake_cuda_libs(dir: &Path) -> Vec<&'static str> {
    let names = vec![
        "libcudart.so.13",
        "libcublasLt.so.13",
        "libcublas.so.13",
        "libcurand.so.10",
    ];
    let src = dir.join("empty.c");
    std::fs::write(&src, "int diffir_fake_cuda_library;\n").unwrap();
    for name in &names {
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(dir.join(name))
            .arg(&src)
            .arg(format!("-Wl,-soname,{name}"))
            .status()
            .expect("the C compiler (cc) builds the stand-in libraries");
        assert!(status.success());
    }
    names
}

/// `diffir info --backend ort-cuda` lists each CUDA library, where it was loaded from, or why not.
#[test]
fn info_lists_the_cuda_libraries_it_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let libs = tmp.path().join("cuda");
    std::fs::create_dir_all(&libs).unwrap();
    let names = fake_cuda_libs(&libs);
    let o = diffir(&["info", "--backend", "ort-cuda"], &[("DIFFIR_CUDA_LIBS", s(&libs))]);
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    for name in names {
        let want = format!("cuda library:   {name} from {}", libs.join(name).display());
        assert!(text.contains(&want), "missing '{want}' in:\n{text}");
    }
    if !real_gpu() {
        assert!(
            text.contains("cuda library:   libcudnn.so.9 not found (searched"),
            "{text}"
        );
        assert!(text.contains("libcuda.so.1 not found (no NVIDIA driver"), "{text}");
        // CUDA cannot run here: the error says why, and the exit code is a backend's.
        assert_eq!(o.status.code(), Some(2), "{text}");
    }
}

/// `--device all` counts what CUDA shows, from nvidia-smi and CUDA_VISIBLE_DEVICES (no /proc needed), and
/// `diffir info` maps each CUDA device to nvidia-smi's row by UUID.
#[test]
fn devices_follow_cuda_visible_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let path = fake_gpu_path(tmp.path());
    let o = diffir(
        &["info", "--backend", "ort-cuda", "--device", "all"],
        &[("PATH", &path), ("CUDA_VISIBLE_DEVICES", "GPU-bbbb2222")],
    );
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(
        text.contains("gpu:            cuda:0 = NVIDIA H200 (GPU-bbbb2222-0000-0000-0000-000000000000, nvidia-smi index 1, 140000 MiB free"),
        "{text}"
    );
    assert!(!text.contains("cuda:1"), "{text}");
    if !real_gpu() {
        let o = diffir(&["info", "--device", "all"], &[]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("no NVIDIA GPU is visible"), "{}", stderr(&o));
    }
}

/// `diffir info --tile T --tile-batch B [--precision P]` prints the activation estimate on a line of its own.
#[test]
fn info_prints_the_activation_estimate() {
    let model = bundles_dir().join("sr_x4");
    for (precision, batch) in [("fp32", "2"), ("fp16", "1")] {
        let o = diffir(
            &[
                "info",
                "--model",
                s(&model),
                "--backend",
                "ort-cpu",
                "--tile",
                "64",
                "--tile-batch",
                batch,
                "--precision",
                precision,
                "--threads",
                "1",
            ],
            &[],
        );
        let text = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{text}{}", stderr(&o));
        let p: Precision = precision.parse().unwrap();
        let want = diffir::internal::activations::backbone(&load("sr_x4"), batch.parse().unwrap(), (64, 64), p)
            .unwrap()
            .bytes as f64
            / 1048576.0;
        let line = text
            .lines()
            .find(|l| l.starts_with("activations: "))
            .unwrap_or_else(|| panic!("no activations line:\n{text}"));
        assert!(
            line.starts_with(&format!(
                "activations: {want:.0} MiB (one backbone call of {batch} tile(s) of 64x64, {precision}"
            )),
            "{line}"
        );
        assert!(text.contains("runs on:        onnxruntime CPU"), "{text}");
    }
}

/// scripts/gpu-check.sh stops at its preflight, within 30 s, where the CUDA provider does not start (here: a
/// GPU that nvidia-smi pretends to have, and the CPU build of onnxruntime), and keeps that output in its
/// log folder.
#[test]
fn the_gpu_check_stops_at_its_preflight() {
    if real_gpu() {
        eprintln!("skipped: this machine has a GPU, so the preflight may pass (the check itself is then run)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = fake_gpu_path(tmp.path());
    let out = tmp.path().join("check");
    let started = std::time::Instant::now();
    let o = Command::new("bash")
        .arg(repo().join("scripts/gpu-check.sh"))
        .arg(&out)
        .arg(env!("CARGO_BIN_EXE_diffir"))
        .env("PATH", &path)
        .current_dir(repo())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}{}", stderr(&o));
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
    assert!(stdout.contains("preflight failed"), "{stdout}");
    let log = std::fs::read_to_string(out.join("logs/00-preflight.log")).unwrap();
    assert!(log.contains("cuda library:   libcudart.so.13"), "{log}");
    assert!(log.contains("CUDA"), "{log}");
    assert!(stdout.contains(&log), "the preflight's output is printed whole");
}
