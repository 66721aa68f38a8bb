//! The plugin providers: OpenVINO against the CPU provider on every committed bundle, WebGPU on lavapipe
//! (Mesa's software Vulkan driver) against the CPU provider on the built-in model, and the CPU provider kept
//! on the CPU with plugins registered.
//!
//! The plugins and lavapipe come from `scripts/install-onnxruntime.sh --openvino --webgpu --lavapipe`
//! (scripts/test.sh runs it). Where one is missing the test says "skipped"; under CI=true that is a
//! failure. The OpenVINO plugin offers devices on Intel hardware only: on other CPUs its tests check that
//! `ort-openvino` refuses to start with that reason, and say visibly that the comparison did not run.
//!
//! WebGPU needs the Vulkan loader found by the dynamic linker when the process starts, so its test runs the
//! `diffir` binary with the environment that selects lavapipe; the registration test runs this test binary
//! again (`plugins::probe`, ignored in normal runs) for the same reason.

use std::path::{Path, PathBuf};
use std::process::Command;

use diffir::internal::backend::ort::{self, Provider};
use diffir::internal::backend::plugin::{self, Plugin};
use diffir::internal::backend::{BackendKind, EngineOptions, Input};
use diffir::internal::bundle::GraphKind;
use diffir::{Bundle, Pipeline, Tiling};

use crate::common::*;
use diffir::internal::pipeline::Stages;

/// The install folder of scripts/install-onnxruntime.sh.
fn ort_dir() -> PathBuf {
    ort::install_dir()
}

/// Whether `path` exists; if not, "skipped" on stderr, or a failure under CI=true.
fn present(path: &Path, what: &str) -> bool {
    if path.exists() {
        return true;
    }
    let why = format!(
        "{what} not found at {} (scripts/install-onnxruntime.sh --openvino --webgpu --lavapipe installs it)",
        path.display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}, and CI=true");
    eprintln!("skipped: {why}");
    false
}

fn plugin_installed(p: Plugin) -> bool {
    let path = match std::env::var_os(p.env_var()) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => ort_dir().join(p.package()).join(p.library_file()),
    };
    present(&path, &format!("the {} plugin", p.name()))
}

/// This machine's CPU vendor (`vendor_id` in /proc/cpuinfo).
fn cpu_vendor() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("vendor_id")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default()
}

fn opts() -> EngineOptions {
    EngineOptions {
        threads: 1,
        workers: 1,
        ..Default::default()
    }
}

/// OpenVINO on its CPU device, in f32, against the CPU provider on a committed bundle, whole image and
/// tiled (a fixed-shape backbone plus the dynamic-shape session for the edge).
fn openvino_matches_cpu(name: &str) {
    if !plugin_installed(Plugin::OpenVino) {
        return;
    }
    let bundle = Bundle::load(bundles_dir().join(name)).unwrap();
    let started = Pipeline::new(bundle.clone(), BackendKind::OrtOpenvino, &opts());
    let vendor = cpu_vendor();
    let openvino = match started {
        Err(e) if vendor != "GenuineIntel" => {
            let e = e.to_string();
            assert!(
                e.contains("Intel hardware only"),
                "{name}: unexpected refusal on {vendor}: {e}"
            );
            eprintln!("not run: OpenVINO offers no device on this {vendor} CPU; ort-openvino refused: {e}");
            return;
        }
        r => r.unwrap_or_else(|e| panic!("{name}: ort-openvino did not start on an Intel CPU: {e}")),
    };
    assert!(
        openvino.backend().line(diffir::Words::Flags).contains("OpenVINO"),
        "{}",
        openvino.backend().line(diffir::Words::Flags)
    );
    let cpu = Pipeline::new(bundle.clone(), BackendKind::OrtCpu, &opts()).unwrap();
    let image = photo(40, 56);
    let mask = mask_for(&bundle, 40, 56);
    let noise = diffir::internal::sampler::seeded_noise(1, bundle.ipr_dim());
    for tiling in [Tiling::WHOLE, Tiling { tile: 32, overlap: 8 }] {
        let a = openvino.restore(&image, mask.as_ref(), &noise, &tiling).unwrap();
        let b = cpu.restore(&image, mask.as_ref(), &noise, &tiling).unwrap();
        let d = max_abs_diff(&a.image.data, &b.image.data);
        eprintln!("{name} OpenVINO vs CPU, tile {}: {d:.2e}", tiling.tile);
        assert!(d <= tol::ENGINES, "{name}: OpenVINO and the CPU provider differ by {d}");
    }
}

macro_rules! openvino_cases {
    ($($test:ident: $name:literal;)*) => {
        $(
            #[test]
            fn $test() {
                openvino_matches_cpu($name);
            }
        )*
    };
}

openvino_cases! {
    openvino_sr_x4: "sr_x4";
    openvino_sr_x2: "sr_x2";
    openvino_sr_x1: "sr_x1";
    openvino_deblur: "deblur";
    openvino_inpaint: "inpaint";
}

/// The environment that gives the WebGPU plugin lavapipe as its adapter, or None (skipped) where it is not
/// installed.
fn lavapipe_env() -> Option<Vec<(String, String)>> {
    let dir = ort_dir().join("lavapipe");
    let icd = dir.join("lvp_icd.json");
    if !present(&icd, "lavapipe (Mesa's software Vulkan driver)") {
        return None;
    }
    Some(vec![
        ("LD_LIBRARY_PATH".into(), dir.join("lib").display().to_string()),
        ("VK_DRIVER_FILES".into(), icd.display().to_string()),
        ("VK_ICD_FILENAMES".into(), icd.display().to_string()),
        ("ORT_WEBGPU_EP_ALLOW_SOFTWARE_ADAPTER".into(), "1".into()),
    ])
}

/// The environment of a `diffir` run on WebGPU over lavapipe, or None (skipped) where the WebGPU plugin or
/// lavapipe is not installed.
fn webgpu_env() -> Option<Vec<(String, String)>> {
    if !plugin_installed(Plugin::WebGpu) {
        return None;
    }
    lavapipe_env()
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The built-in model on WebGPU (lavapipe), tiled, against the CPU provider, through the command line.
#[test]
fn webgpu_on_lavapipe_matches_cpu() {
    let Some(env) = webgpu_env() else { return };
    let env = pairs(&env);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    let img = photo(40, 56);
    let bytes: Vec<u8> = img.data.iter().map(|v| (v * 255.0).round() as u8).collect();
    image::RgbImage::from_raw(56, 40, bytes).unwrap().save(&input).unwrap();
    let mut outputs = vec![];
    for backend in ["ort-webgpu", "ort-cpu"] {
        let out = dir.path().join(format!("{backend}.npy"));
        let o = diffir(
            &[
                "restore",
                s(&input),
                "-o",
                s(&out),
                "--backend",
                backend,
                "--tile",
                "32",
                "--tile-overlap",
                "8",
                "--threads",
                "1",
                "-v",
            ],
            &env,
        );
        assert!(o.status.success(), "{backend}: {}", stderr(&o));
        if backend == "ort-webgpu" {
            assert!(stderr(&o).contains("(WebGPU; plugin "), "{}", stderr(&o));
        }
        outputs.push(ndarray_npy::read_npy::<_, ndarray::Array3<f32>>(&out).unwrap());
    }
    assert_eq!(outputs[0].shape(), [160, 224, 3]);
    let d = max_abs_diff(outputs[0].as_slice().unwrap(), outputs[1].as_slice().unwrap());
    eprintln!("built-in WebGPU (lavapipe) vs CPU, tile 32: {d:.2e}");
    assert!(d <= tol::ENGINES, "WebGPU and the CPU provider differ by {d}");
}

/// The child of `cpu_sessions_stay_on_the_cpu_provider`: registers every plugin, then prints the providers
/// that ran the backbone of a CPU session built as the engine builds it (pinned) and one left to onnxruntime's
/// automatic selection (unpinned), as `PROBE pinned|unpinned PROVIDER=NODES ...`.
#[test]
#[ignore = "run by plugins::cpu_sessions_stay_on_the_cpu_provider in a child process"]
fn probe() {
    for (p, r, _) in plugin::survey().unwrap().plugins {
        println!("REGISTERED {} {}", p.name(), r.is_ok());
    }
    for d in plugin::devices().unwrap() {
        println!("DEVICE {} {}", d.ep, d.kind);
    }
    let bundle = load("sr_x4");
    let (c, d) = (bundle.spec.input_channels, bundle.ipr_dim());
    let image = vec![0.5f32; c * 16 * 16];
    let ipr = vec![0.1f32; d];
    let inputs = [Input::F32(&[1, c, 16, 16], &image), Input::F32(&[1, d], &ipr)];
    for pinned in [true, false] {
        let used = ort::providers_used(&bundle, GraphKind::Backbone, &opts(), Provider::Cpu, pinned, &inputs).unwrap();
        let list: Vec<String> = used.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "PROBE {} {}",
            if pinned { "pinned" } else { "unpinned" },
            list.join(" ")
        );
    }
}

/// With the OpenVINO and WebGPU plugins registered (and a WebGPU adapter), every node of a CPU session runs
/// on the CPU provider. Where OpenVINO offers a CPU device (Intel CPUs), the same session left to
/// onnxruntime's automatic selection runs on OpenVINO instead: what the pinning prevents.
#[test]
fn cpu_sessions_stay_on_the_cpu_provider() {
    if !plugin_installed(Plugin::OpenVino) || !plugin_installed(Plugin::WebGpu) {
        return;
    }
    let Some(env) = lavapipe_env() else { return };
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "plugins::probe",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .envs(env)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("PROBE {key} ")).map(str::to_string))
            .unwrap_or_else(|| panic!("no PROBE {key} line in:\n{text}"))
    };
    eprintln!("{text}");
    assert!(
        text.contains("REGISTERED OpenVINO true") && text.contains("REGISTERED WebGPU true"),
        "{text}"
    );
    assert!(
        text.contains("DEVICE WebGpuExecutionProvider"),
        "no WebGPU adapter:\n{text}"
    );
    let pinned = line("pinned");
    assert!(
        pinned.starts_with("CPUExecutionProvider=") && !pinned.contains(' '),
        "pinned: {pinned}"
    );
    if text.contains("DEVICE OpenVINOExecutionProvider cpu") {
        let unpinned = line("unpinned");
        assert!(unpinned.contains("OpenVINOExecutionProvider"), "unpinned: {unpinned}");
    } else {
        eprintln!(
            "note: OpenVINO offers no CPU device on this {} CPU, so the unpinned session's takeover is not shown here",
            cpu_vendor()
        );
    }
}

/// `diffir info` lists the plugin devices it sees.
#[test]
fn info_lists_plugin_devices() {
    let Some(env) = webgpu_env() else { return };
    let env = pairs(&env);
    let o = diffir(&["info"], &env);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        text.contains("CPUExecutionProvider") && text.contains("WebGpuExecutionProvider"),
        "{text}"
    );
}
