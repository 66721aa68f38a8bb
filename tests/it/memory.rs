//! Memory per CPU worker: the onnxruntime sessions of a graph share one copy of its weights, and the plan's
//! memory budget never underestimates what a worker costs.
//!
//! Peak memory is a property of a process, so each measurement runs in a child: this test binary again,
//! running only `memory::probe` (ignored in normal runs) with what to measure in `DIFFIR_PROBE`.
//! `DIFFIR_MEMORY_BUNDLE=DIR cargo nextest run memory --no-capture` also prints the figures for another
//! bundle (BENCHMARKS.md, "Memory per worker", used a real-size realsr_x2).

use std::path::Path;
use std::process::Command;

use diffir::internal::backend::ort::{OrtEngine, Provider};
use diffir::internal::backend::{Engine, EngineOptions, Input};
use diffir::internal::bundle::{Bundle, GraphKind};
use diffir::internal::plan::cpu_worker_bytes;

/// Resident and peak resident memory of this process, in bytes (Linux /proc).
fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} missing from /proc/self/status"))
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The child: start an onnxruntime CPU engine with N workers, then run N backbone tiles at once, twice.
/// Prints `PROBE <resident after start> <peak>` in bytes.
#[test]
#[ignore = "run by the memory tests in a child process"]
fn probe() {
    let spec = std::env::var("DIFFIR_PROBE").expect("DIFFIR_PROBE=bundle|workers|tile|own");
    let parts: Vec<&str> = spec.split('|').collect();
    let bundle = Bundle::load(parts[0]).unwrap();
    let workers: usize = parts[1].parse().unwrap();
    let tile: usize = parts[2].parse().unwrap();
    let own_weights = parts[3] == "own";
    let opts = EngineOptions {
        threads: 1,
        workers,
        tile_batch: 1,
        own_weights,
        ..Default::default()
    };
    let engine = OrtEngine::start(&bundle, &opts, Provider::Cpu).unwrap();
    let (started, _) = rss();
    let (c, d) = (bundle.spec.input_channels, bundle.ipr_dim());
    let image = vec![0.5f32; c * tile * tile];
    let ipr = vec![0.1f32; d];
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                for _ in 0..2 {
                    let inputs = [Input::F32(&[1, c, tile, tile], &image), Input::F32(&[1, d], &ipr)];
                    engine.run(GraphKind::Backbone, &inputs).unwrap();
                }
            });
        }
    });
    println!("PROBE {started} {}", rss().1);
}

struct Footprint {
    started: u64,
    peak: u64,
}

fn measure(bundle: &Path, workers: usize, tile: usize, own: bool) -> Footprint {
    let spec = format!(
        "{}|{workers}|{tile}|{}",
        bundle.display(),
        if own { "own" } else { "shared" }
    );
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "memory::probe",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("DIFFIR_PROBE", &spec)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.split("PROBE ").nth(1))
        .unwrap_or_else(|| {
            panic!(
                "probe {spec} printed no figures:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let v: Vec<u64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
    Footprint {
        started: v[0],
        peak: v[1],
    }
}

const MB: f64 = 1024.0 * 1024.0;

/// Measure 1 and 16 workers, sharing and not, print the table, and return it.
fn table(bundle: &Path, tile: usize) -> [Footprint; 3] {
    let one = measure(bundle, 1, tile, false);
    let shared = measure(bundle, 16, tile, false);
    let own = measure(bundle, 16, tile, true);
    eprintln!(
        "{} at tile {tile} (MiB: resident after start / peak):",
        bundle.display()
    );
    for (name, f) in [
        ("1 worker", &one),
        ("16 workers, shared weights", &shared),
        ("16 workers, own weights", &own),
    ] {
        eprintln!(
            "  {name:<28} {:>6.0} / {:>6.0}",
            f.started as f64 / MB,
            f.peak as f64 / MB
        );
    }
    [one, shared, own]
}

/// The defect: every worker held its own copy of the weights (about 175 MB per worker for a real-size
/// realsr_x2). With sharing, 15 more workers cost far less than 15 copies of the weights, and the plan's
/// per-worker estimate (what `--max-memory` divides by) covers what a worker really adds.
#[test]
fn sixteen_workers_share_one_copy_of_the_weights() {
    let path = crate::common::repo().join("onnx/diffir-x4-small");
    let bundle = Bundle::load(&path).unwrap();
    let weights: u64 = [GraphKind::Backbone, GraphKind::CpenFeatures]
        .iter()
        .map(|&k| bundle.graph(k).bytes.len() as u64)
        .sum();
    let tile = 32;
    let [one, shared, own] = table(&path, tile);
    // Own copies: each extra worker holds at least the weights; shared: the saving is most of 15 copies.
    let saved = own.started as f64 - shared.started as f64;
    assert!(
        saved >= 0.75 * 15.0 * weights as f64,
        "sharing saved {:.1} MiB at start; 15 copies of the weights are {:.1} MiB",
        saved / MB,
        15.0 * weights as f64 / MB
    );
    assert!(
        shared.peak < own.peak,
        "peak {} (shared) vs {} (own)",
        shared.peak,
        own.peak
    );
    // What one more worker really costs, against the plan's estimate.
    let per_worker = (shared.peak as f64 - one.peak as f64) / 15.0;
    let estimate = cpu_worker_bytes(&bundle, tile).unwrap();
    eprintln!(
        "per extra worker: {:.1} MiB measured, {:.1} MiB estimated",
        per_worker / MB,
        estimate / MB
    );
    assert!(
        per_worker <= estimate,
        "a worker costs {:.1} MiB but the plan budgets {:.1} MiB",
        per_worker / MB,
        estimate / MB
    );
    if let Some(other) = std::env::var_os("DIFFIR_MEMORY_BUNDLE") {
        let other = Path::new(&other);
        let [one, shared, _] = table(other, 64);
        let b = Bundle::load(other).unwrap();
        eprintln!(
            "per extra worker: {:.1} MiB measured, {:.1} MiB estimated",
            (shared.peak as f64 - one.peak as f64) / 15.0 / MB,
            cpu_worker_bytes(&b, 64).unwrap() / MB
        );
    }
}

/// One huge image (1×20,000,000 pixels, 25 KB as a PNG) between two small ones, under a 3 GB address-space
/// limit (`ulimit -v`): its x4 result would need about 6 GB, so it is refused with the figures before
/// anything is allocated, and the batch goes on with the next image (it aborted before).
#[test]
fn a_huge_image_is_refused_with_its_figures_and_the_batch_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    let small = crate::common::bundles_dir().join("sr_x4").join("input.png");
    std::fs::copy(&small, inputs.join("a.png")).unwrap();
    std::fs::copy(&small, inputs.join("c.png")).unwrap();
    let huge = std::fs::File::create(inputs.join("b.png")).unwrap();
    let mut png = png::Encoder::new(std::io::BufWriter::new(huge), 20_000_000, 1);
    png.set_color(png::ColorType::Grayscale);
    png.set_depth(png::BitDepth::Eight);
    png.set_compression(png::Compression::Fast);
    let mut writer = png.write_header().unwrap();
    writer.write_image_data(&vec![0u8; 20_000_000]).unwrap();
    writer.finish().unwrap();
    let out = dir.path().join("out");
    let model = crate::common::bundles_dir().join("sr_x4");
    let script = format!(
        "ulimit -v 3000000; exec '{}' restore '{}' -o '{}' -n '{}' --backend tract -q",
        env!("CARGO_BIN_EXE_diffir"),
        inputs.display(),
        out.display(),
        model.display()
    );
    let r = Command::new("bash").args(["-c", &script]).output().unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(
        err.contains("b.png") && err.contains("20000000x1 at x4 needs about"),
        "{err}"
    );
    assert!(out.join("a.png").is_file() && out.join("c.png").is_file(), "{err}");
    assert!(!out.join("b.png").exists());
    // The same image on standard input: refused with its figures, never an abort.
    let script = format!(
        "ulimit -v 3000000; exec '{}' restore - -o '{}' -n '{}' --backend tract -q < '{}'",
        env!("CARGO_BIN_EXE_diffir"),
        dir.path().join("piped.png").display(),
        model.display(),
        inputs.join("b.png").display()
    );
    let r = Command::new("bash").args(["-c", &script]).output().unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(matches!(r.status.code(), Some(1 | 2)), "{:?}: {err}", r.status);
    assert!(err.contains("20000000x1 at x4 needs about"), "{err}");
    assert!(!dir.path().join("piped.png").exists());
}

/// A tile of 99999999 and a memory limit of 1 byte are said in the summary line (without -v): what one
/// worker would need against the budget, and that one worker runs anyway.
#[test]
fn a_budget_that_cannot_hold_one_worker_is_said_without_verbose() {
    let dir = tempfile::tempdir().unwrap();
    let input = crate::common::bundles_dir().join("sr_x4").join("input.png");
    for extra in [&["--tile", "99999999"][..], &["--max-memory", "1"][..]] {
        let out = dir.path().join("o.png");
        let r = crate::common::restore_on_tract(&input, &out, &[extra, &["--overwrite"]].concat());
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(r.status.success(), "{extra:?}: {err}");
        let line = err.lines().next().unwrap_or_default();
        assert!(line.contains("is less than one worker needs"), "{extra:?}: {line}");
        assert!(line.contains("using 1 worker"), "{extra:?}: {line}");
    }
    let out = dir.path().join("o.png");
    let r = crate::common::restore_on_tract(&input, &out, &["--max-memory", "1", "--overwrite"]);
    assert!(String::from_utf8_lossy(&r.stderr).contains("max-memory 1 B is less"));
}
