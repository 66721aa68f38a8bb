//! The activation model (crate::activations) against onnxruntime's measured peak on the CPU: three bundles
//! (the built-in model, and real-size realsr_x2 and deblur_gopro with random weights), two tiles and two
//! batch sizes, each case within ±30 %.
//!
//! Peak memory is a property of a process, so each measurement runs in a child: this test binary again,
//! running only `activations::probe` with the case in `DIFFIR_ACTIVATION_PROBE`. The child starts an
//! onnxruntime CPU engine (as the engine runs it: all graph optimisations) planned for the case's fixed
//! shape, without onnxruntime's arena (tensors are freed after their last use, so what it holds is what is
//! alive), runs the backbone once to warm up, returns freed memory to the system, resets the peak, runs once
//! more and prints how far the resident set rose above where it started. glibc is told to give every block
//! of 64 KiB or more its own mapping (`MALLOC_MMAP_THRESHOLD_`), returned at `free`: otherwise its heap keeps
//! freed blocks that later, larger tensors cannot reuse, and the process holds about twice what is alive
//! (measured 1.9–2.6x here; the CPU plan's margin covers it, crate::plan::CPU_ACTIVATION_MARGIN).
//!
//! The committed test bundles are not used: their widths (4 and 8 channels) are below the channel blocks of
//! onnxruntime's CPU layout (8 or 16), which pads them, so their peak is up to twice the graph's.

use std::path::PathBuf;
use std::process::Command;

use diffir::internal::activations;
use diffir::internal::backend::ort::{OrtEngine, Provider};
use diffir::internal::backend::{Engine, EngineOptions, Input};
use diffir::{Bundle, GraphKind, Precision};

use crate::common::*;

/// How far the estimate may be from the measurement, either way.
const WITHIN: f64 = 0.30;

extern "C" {
    /// glibc: return free heap memory to the system.
    fn malloc_trim(pad: usize) -> i32;
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{field} missing from /proc/self/status"))
}

/// The child: one backbone call of the case, measured. Prints `PEAK <bytes>`.
#[test]
#[ignore = "run by the activation tests in a child process"]
fn probe() {
    let spec = std::env::var("DIFFIR_ACTIVATION_PROBE").expect("DIFFIR_ACTIVATION_PROBE=bundle|tile|batch");
    let parts: Vec<&str> = spec.split('|').collect();
    let bundle = match parts[0] {
        "builtin" => Bundle::builtin().unwrap(),
        path => Bundle::load(path).unwrap(),
    };
    let tile: usize = parts[1].parse().unwrap();
    let batch: usize = parts[2].parse().unwrap();
    // Two workers: sessions without onnxruntime's arena or memory patterns (crate::backend::ort).
    let opts = EngineOptions {
        threads: 1,
        workers: 2,
        tile_shape: Some((tile, tile)),
        tile_batch: batch,
        ..Default::default()
    };
    let engine = OrtEngine::start(&bundle, &opts, Provider::Cpu).unwrap();
    let (c, d) = (bundle.spec.input_channels, bundle.ipr_dim());
    let image: Vec<f32> = (0..batch * c * tile * tile).map(|i| (i % 251) as f32 / 251.0).collect();
    let ipr = vec![0.1f32; batch * d];
    let shape = [batch, c, tile, tile];
    let run = || {
        let inputs = [Input::F32(&shape, &image), Input::F32(&[batch, d], &ipr)];
        engine.run(GraphKind::Backbone, &inputs).unwrap()
    };
    drop(run());
    // SAFETY: glibc's malloc_trim has no preconditions.
    unsafe { malloc_trim(0) };
    let before = status_kib("VmRSS:");
    // Reset the peak resident set to the current one (Linux ≥ 4.0).
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak through /proc/self/clear_refs");
    let out = run();
    let peak = status_kib("VmHWM:");
    assert!(out.data.iter().all(|v| v.is_finite()));
    println!("PEAK {}", (peak.saturating_sub(before)) * 1024);
}

fn measured(bundle: &str, tile: usize, batch: usize) -> u64 {
    let spec = format!("{bundle}|{tile}|{batch}");
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "activations::probe",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DIFFIR_ACTIVATION_PROBE", &spec)
        .env("MALLOC_MMAP_THRESHOLD_", "65536")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.split("PEAK ").nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "probe {spec} printed no figure:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// A real-size bundle scripts/export_random.py makes (the test command runs it first); None with a note
/// where it is missing, a failure under CI=true.
fn real_size(name: &str) -> Option<PathBuf> {
    let dir = repo().join("target/random-bundles").join(name);
    needed(
        &dir.join("bundle.yaml"),
        "a real-size bundle",
        "python scripts/export_random.py makes it",
    )
    .map(|_| dir)
}

fn check(which: &str, tile: usize, batch: usize) {
    let (spec, bundle) = match which {
        "builtin" => ("builtin".to_string(), Bundle::builtin().unwrap()),
        name => {
            let Some(p) = real_size(name) else { return };
            (p.display().to_string(), Bundle::load(&p).unwrap())
        }
    };
    let m = bundle.spec.size_multiple;
    assert_eq!(tile % m, 0, "{which}: tile {tile} is not a multiple of {m}");
    let estimate = activations::backbone(&bundle, batch, (tile, tile), Precision::Fp32).unwrap();
    let got = measured(&spec, tile, batch);
    let ratio = estimate.bytes as f64 / got as f64;
    eprintln!(
        "{which}, {batch} x {tile}²: estimated {:.1} MiB (peak at {}), onnxruntime CPU measured {:.1} MiB: {ratio:.2}",
        estimate.bytes as f64 / 1048576.0,
        estimate.at,
        got as f64 / 1048576.0
    );
    assert!(
        (ratio - 1.0).abs() <= WITHIN,
        "{which}, {batch} x {tile}²: the estimate is {ratio:.2}x the measured peak"
    );
}

macro_rules! cases {
    ($($test:ident: $which:literal, $tile:literal, $batch:literal;)*) => {
        $(
            #[test]
            fn $test() {
                check($which, $tile, $batch);
            }
        )*
    };
}

cases! {
    builtin_64_1: "builtin", 64, 1;
    builtin_64_2: "builtin", 64, 2;
    builtin_128_1: "builtin", 128, 1;
    builtin_128_2: "builtin", 128, 2;
    realsr_x2_64_1: "realsr_x2", 64, 1;
    realsr_x2_64_2: "realsr_x2", 64, 2;
    realsr_x2_96_1: "realsr_x2", 96, 1;
    realsr_x2_96_2: "realsr_x2", 96, 2;
    deblur_64_1: "deblur_gopro", 64, 1;
    deblur_64_2: "deblur_gopro", 64, 2;
    deblur_128_1: "deblur_gopro", 128, 1;
    deblur_128_2: "deblur_gopro", 128, 2;
}

/// The estimate grows with the pixels of a call, halves in fp16, and the plan's per-pixel figure is the
/// estimate at its reference tile.
#[test]
fn the_estimate_scales_with_pixels_and_precision() {
    let b = load("sr_x4");
    let one = activations::backbone(&b, 1, (64, 64), Precision::Fp32).unwrap().bytes as f64;
    let two = activations::backbone(&b, 2, (64, 64), Precision::Fp32).unwrap().bytes as f64;
    let big = activations::backbone(&b, 1, (128, 128), Precision::Fp32).unwrap().bytes as f64;
    assert!((two / one - 2.0).abs() < 0.05, "batch 2 / batch 1 = {}", two / one);
    assert!((big / one - 4.0).abs() < 0.2, "128² / 64² = {}", big / one);
    let half = activations::backbone(&b, 1, (64, 64), Precision::Fp16).unwrap().bytes as f64;
    assert!(half < 0.75 * one && half > 0.4 * one, "fp16 / fp32 = {}", half / one);
    let per_pixel = activations::bytes_per_pixel(&b, Precision::Fp32).unwrap();
    assert!((per_pixel * 64.0 * 64.0 - one).abs() < 1.0);
}
