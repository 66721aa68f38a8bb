//! Scale-out on Triton: the generated repository parses against Triton's model-configuration schema, the
//! proto matches Triton's descriptors, the unrolled prior graph equals the runtime's CPEN + loop, and a real
//! `tritonserver` (nvidia-pytriton's, serving the repository through the test-only Python-backend shim)
//! restores exactly what the local backend does, fails images cleanly when killed, and names a missing
//! model or a mismatched shape.
//!
//! Where the Triton Python packages are not installed the server tests say "skipped"; under CI=true that
//! is a failure (scripts/test.sh installs them).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use diffir::internal::backend::{BackendKind, EngineOptions};
use diffir::internal::triton::{InstanceKind, RepoOptions, TritonOptions};
use diffir::{Pipeline, PlanRequest, TileRequest, Tiling};

use crate::common::*;
use diffir::internal::pipeline::Stages;

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Run scripts/triton_tool.py; None (after saying "skipped") where the Triton packages are missing, which
/// under CI=true is a failure.
fn tool(args: &[&str]) -> Option<String> {
    let out = Command::new(python())
        .arg(repo().join("scripts/triton_tool.py"))
        .args(args)
        .output()
        .expect("run python");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.code() == Some(3) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Triton's Python packages are missing and CI=true: {text}"
        );
        eprintln!("skipped: {text}");
        return None;
    }
    assert!(
        out.status.success(),
        "triton_tool {args:?} failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(text)
}

fn write_repo(bundle: &str, dir: &Path, opts: &RepoOptions) {
    diffir::internal::triton::repo::write(&load(bundle), dir, opts).unwrap();
}

fn cpu_repo_options() -> RepoOptions {
    RepoOptions {
        kind: InstanceKind::Cpu,
        instances: 2,
        max_batch: 4,
        tile: 32,
        ..Default::default()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A tritonserver on loopback serving a shim copy of a repository; killed when dropped, pass or fail.
struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Serve `repo` (a `diffir triton-repo` output); None where Triton is not installed (see `tool`).
    fn start(repo_dir: &Path) -> Option<Server> {
        let binary = PathBuf::from(tool(&["server"])?);
        let dir = tempfile::tempdir().unwrap();
        let shim = dir.path().join("repo");
        tool(&["shim", s(repo_dir), s(&shim)])?;
        let backends = binary.parent().unwrap().parent().unwrap().join("backends");
        let log = dir.path().join("tritonserver.log");
        // The Python backend stub finds numpy and onnxruntime through the interpreter's bin on PATH.
        let py = Command::new(python())
            .args(["-c", "import sys, os; print(os.path.dirname(sys.executable))"])
            .output()
            .unwrap();
        let bin = String::from_utf8_lossy(&py.stdout).trim().to_string();
        let path = format!("{bin}:{}", std::env::var("PATH").unwrap_or_default());
        let port = free_port();
        let child = Command::new(&binary)
            .args([
                "--model-repository",
                s(&shim),
                "--backend-directory",
                s(&backends),
                "--grpc-address",
                "127.0.0.1",
                "--grpc-port",
                &port.to_string(),
                "--allow-http",
                "false",
                "--allow-metrics",
                "false",
                "--log-verbose",
                "0",
            ])
            .env("PATH", path)
            .env("DIFFIR_SHIM_THREADS", "1")
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("stderr.log")).unwrap(),
            ))
            .spawn()
            .expect("start tritonserver");
        let mut server = Server {
            child,
            port,
            log,
            _dir: dir,
        };
        server.wait_ready();
        Some(server)
    }

    fn url(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.port)
    }

    fn logs(&self) -> String {
        let err = self.log.with_file_name("stderr.log");
        format!(
            "{}\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            std::fs::read_to_string(err).unwrap_or_default()
        )
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("tritonserver exited ({status}) before it was ready:\n{}", self.logs());
            }
            if self.logs().contains("Started GRPCInferenceService") {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "tritonserver not ready after 120 s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The batch sizes the server formed for `model` (its statistics API).
    fn batch_sizes(&self, model: &str) -> serde_json::Value {
        let out = tool(&["stats", &format!("127.0.0.1:{}", self.port), model]).unwrap();
        serde_json::from_str(&out).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------------------
// The repository and the protocol, against Triton's own schemas.

#[test]
fn configs_parse_against_tritons_model_config_schema() {
    let dir = tempfile::tempdir().unwrap();
    for (i, name) in BUNDLES.iter().enumerate() {
        let opts = RepoOptions {
            tensorrt: i % 2 == 0,
            kind: if i % 2 == 0 {
                InstanceKind::Gpu
            } else {
                InstanceKind::Cpu
            },
            instances: 1 + i,
            max_batch: 2 + i,
            tile: 64,
            ..Default::default()
        };
        write_repo(name, dir.path(), &opts);
    }
    let Some(out) = tool(&["check-configs", s(dir.path())]) else {
        return;
    };
    let configs: serde_json::Value = serde_json::from_str(&out).unwrap();
    for (i, name) in BUNDLES.iter().enumerate() {
        let bundle = load(name);
        let c = bundle.spec.input_channels as i64;
        let b = &configs[format!("{name}_backbone")];
        let p = &configs[format!("{name}_prior")];
        assert_eq!(b["platform"], "onnxruntime_onnx", "{name}");
        assert_eq!(p["platform"], "onnxruntime_onnx", "{name}");
        assert_eq!(b["maxBatchSize"], 2 + i as i64, "{name}");
        assert!(
            p.get("maxBatchSize").is_none(),
            "{name}: the prior takes one image per request"
        );
        assert_eq!(
            b["input"][0]["dims"],
            serde_json::json!([c.to_string(), "-1", "-1"]),
            "{name}"
        );
        assert_eq!(
            b["input"][1]["dims"],
            serde_json::json!([bundle.ipr_dim().to_string()]),
            "{name}"
        );
        assert_eq!(
            p["input"][0]["dims"],
            serde_json::json!(["1", c.to_string(), "-1", "-1"]),
            "{name}"
        );
        assert!(b["dynamicBatching"].is_object(), "{name}");
        assert_eq!(b["instanceGroup"][0]["count"], 1 + i as i64, "{name}");
        let kind = if i % 2 == 0 { "KIND_GPU" } else { "KIND_CPU" };
        assert_eq!(b["instanceGroup"][0]["kind"], kind, "{name}");
        let trt = &b["optimization"]["executionAccelerators"]["gpuExecutionAccelerator"][0]["name"];
        assert_eq!(
            trt == "tensorrt",
            i % 2 == 0,
            "{name}: TensorRT block only with --tensorrt"
        );
        assert_eq!(b["parameters"]["diffir_tile"]["stringValue"], "64", "{name}");
    }
}

#[test]
fn proto_matches_tritons_compiled_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let desc = dir.path().join("inference.desc");
    std::fs::write(&desc, diffir::internal::triton::proto::FILE_DESCRIPTOR_SET).unwrap();
    let Some(out) = tool(&["check-proto", s(&desc)]) else {
        return;
    };
    let counts: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(counts["rpcs"], 5, "{out}");
    assert!(counts["messages"].as_i64().unwrap() >= 20, "{out}");
    assert!(counts["fields"].as_i64().unwrap() >= 60, "{out}");
}

#[test]
fn the_proto_check_catches_a_wrong_field_number() {
    // The same check must fail on a descriptor with one field renumbered.
    use prost::Message;
    let mut fds = prost_types_free::decode(diffir::internal::triton::proto::FILE_DESCRIPTOR_SET);
    fds.bump_first_field();
    let dir = tempfile::tempdir().unwrap();
    let desc = dir.path().join("bad.desc");
    std::fs::write(&desc, fds.encode_to_vec()).unwrap();
    let out = Command::new(python())
        .arg(repo().join("scripts/triton_tool.py"))
        .args(["check-proto", s(&desc)])
        .output()
        .unwrap();
    if out.status.code() == Some(3) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "tritonclient missing under CI=true"
        );
        eprintln!("skipped: tritonclient is not installed");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ours"));
}

/// Just enough of descriptor.proto to renumber a field (FileDescriptorSet → file → message → field).
mod prost_types_free {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Set {
        #[prost(message, repeated, tag = "1")]
        pub file: Vec<File>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct File {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(string, optional, tag = "2")]
        pub package: Option<String>,
        #[prost(message, repeated, tag = "4")]
        pub message_type: Vec<Msg>,
        #[prost(message, repeated, tag = "6")]
        pub service: Vec<Service>,
        #[prost(string, optional, tag = "12")]
        pub syntax: Option<String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Msg {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(message, repeated, tag = "2")]
        pub field: Vec<Field>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Field {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(int32, optional, tag = "3")]
        pub number: Option<i32>,
        #[prost(int32, optional, tag = "4")]
        pub label: Option<i32>,
        #[prost(int32, optional, tag = "5")]
        pub r#type: Option<i32>,
        #[prost(string, optional, tag = "6")]
        pub type_name: Option<String>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Service {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
    }
    pub fn decode(bytes: &[u8]) -> Set {
        <Set as prost::Message>::decode(bytes).unwrap()
    }
    impl Set {
        /// Renumber the first field of the first message that has one.
        pub fn bump_first_field(&mut self) {
            let m = self.file[0]
                .message_type
                .iter_mut()
                .find(|m| !m.field.is_empty())
                .unwrap();
            let f = &mut m.field[0];
            f.number = Some(f.number.unwrap() + 100);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The unrolled prior graph against the runtime's own CPEN + reverse chain (onnxruntime CPU, 1 thread).

fn check_prior_graph(name: &str) {
    let bundle = load(name);
    let graph = diffir::internal::triton::prior_graph::build(&bundle).unwrap();
    let pipeline = Pipeline::new(
        bundle.clone(),
        BackendKind::OrtCpu,
        &EngineOptions {
            threads: 1,
            workers: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let c = bundle.spec.input_channels;
    for (seed, (h, w)) in [(1u64, (24usize, 32usize)), (7, (40, 16))] {
        let x: Vec<f32> = (0..c * h * w)
            .map(|i| ((i * 37 + seed as usize) % 101) as f32 / 100.0)
            .collect();
        let shape = [1, c, h, w];
        let noise = diffir::internal::sampler::seeded_noise(seed, bundle.ipr_dim());
        let condition = pipeline.condition(&x, &shape).unwrap();
        let local = pipeline.sample(&condition, &noise).unwrap().pop().unwrap();
        let (out_shape, remote) = run_standalone(
            &graph,
            &[("image", &shape, &x), ("noise", &[1, noise.len()], &noise)],
            "ipr",
        );
        assert_eq!(out_shape, [1, bundle.ipr_dim()], "{name}");
        let remote = &remote;
        let d = max_abs_diff(&local, remote);
        eprintln!("{name} {h}x{w}: prior graph vs runtime max diff {d:e}");
        assert!(d <= tol::EXACT, "{name} {h}x{w}: prior graph vs runtime max diff {d}");
    }
}

macro_rules! prior_graph_cases {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                check_prior_graph($name);
            }
        )*
    };
}

prior_graph_cases!(
    prior_graph_sr_x4 => "sr_x4",
    prior_graph_sr_x2 => "sr_x2",
    prior_graph_sr_x1 => "sr_x1",
    prior_graph_deblur => "deblur",
    prior_graph_inpaint => "inpaint",
);

#[test]
fn the_builtin_model_has_a_prior_graph_too() {
    let bundle = diffir::Bundle::builtin().unwrap();
    let graph = diffir::internal::triton::prior_graph::build(&bundle).unwrap();
    assert!(graph.len() > bundle.graph(diffir::GraphKind::Cpen).bytes.len());
}

// ---------------------------------------------------------------------------------------------------------
// A real tritonserver.

fn check_remote(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    write_repo(name, dir.path(), &cpu_repo_options());
    let Some(server) = Server::start(dir.path()) else {
        return;
    };
    let bundle = load(name);
    let (h, w) = (52, 76);
    let image = photo(h, w);
    let mask = mask_for(&bundle, h, w);
    let noise = diffir::internal::sampler::seeded_noise(5, bundle.ipr_dim());
    let tiling = Tiling { tile: 32, overlap: 8 };
    let req = PlanRequest {
        workers: Some(4),
        tile_batch: Some(2),
        tile: TileRequest::Pixels(32),
        ..Default::default()
    };
    let remote = Pipeline::start_triton(bundle.clone(), &TritonOptions::new(server.url()), &req)
        .unwrap_or_else(|e| panic!("{name}: {e}\n{}", server.logs()));
    assert_eq!(remote.plan().tile, 32);
    let r = remote
        .restore(&image, mask.as_ref(), &noise, &tiling)
        .unwrap_or_else(|e| panic!("{name}: {e}\n{}", server.logs()));
    let local = Pipeline::new(
        bundle,
        BackendKind::OrtCpu,
        &EngineOptions {
            threads: 1,
            workers: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let l = local.restore(&image, mask.as_ref(), &noise, &tiling).unwrap();
    assert_eq!(r.tiles, l.tiles, "{name}");
    assert!(r.tiles > 4, "{name}: the image must be tiled");
    let d_ipr = max_abs_diff(r.ipr(), l.ipr());
    let d = max_abs_diff(&r.image.data, &l.image.data);
    eprintln!(
        "{name}: remote vs local: prior {d_ipr:e}, image {d:e}, {} tiles",
        r.tiles
    );
    assert!(d_ipr <= tol::CLOSE, "{name}: prior remote vs local {d_ipr}");
    assert!(d <= tol::CLOSE, "{name}: image remote vs local {d}");
    // Every tile reached the backbone model (2 per request, 4 requests in flight, dynamic batching on).
    let stats = server.batch_sizes(&format!("{name}_backbone"));
    assert_eq!(stats["inferences"], r.tiles as i64, "{name}: {stats}");
}

macro_rules! remote_cases {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                check_remote($name);
            }
        )*
    };
}

remote_cases!(
    remote_equals_local_sr_x4 => "sr_x4",
    remote_equals_local_sr_x2 => "sr_x2",
    remote_equals_local_sr_x1 => "sr_x1",
    remote_equals_local_deblur => "deblur",
    remote_equals_local_inpaint => "inpaint",
);

fn restore_remote(inputs: &[&Path], out: &Path, url: &str, extra: &[&str]) -> Output {
    let bundle = bundles_dir().join("sr_x4");
    let mut args: Vec<&str> = vec!["restore"];
    args.extend(inputs.iter().map(|p| s(p)));
    args.extend(["-o", s(out), "--model", s(&bundle), "--triton-url", url]);
    args.extend_from_slice(extra);
    diffir(&args, &[])
}

#[test]
fn a_missing_model_or_a_mismatched_shape_is_exit_2_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    write_repo("sr_x4", dir.path(), &cpu_repo_options());
    let Some(server) = Server::start(dir.path()) else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let input = bundles_dir().join("sr_x4/input.png");
    let o = restore_remote(&[&input], out.path(), &server.url(), &["--triton-model", "nosuch"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("nosuch_prior"), "{}", stderr(&o));
    // The inpainting bundle takes 4 channels; the server's sr_x4 models take 3.
    let inpaint = bundles_dir().join("inpaint");
    let o = diffir(
        &[
            "restore",
            s(&inpaint.join("input.png")),
            "-o",
            s(out.path()),
            "--model",
            s(&inpaint),
            "--mask",
            s(&inpaint.join("mask.png")),
            "--triton-url",
            &server.url(),
            "--triton-model",
            "sr_x4",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("sr_x4_prior") && e.contains("[1, 3, -1, -1]") && e.contains("[1, 4, any, any]"),
        "{e}"
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0, "no output files");
}

#[test]
fn a_server_that_is_not_there_is_exit_2_naming_it() {
    let out = tempfile::tempdir().unwrap();
    let input = bundles_dir().join("sr_x4/input.png");
    let url = format!("grpc://127.0.0.1:{}", free_port());
    let o = restore_remote(&[&input], out.path(), &url, &["--triton-retry", "0.5"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&url) && stderr(&o).contains("not reachable"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_server_killed_mid_batch_fails_the_rest_with_exit_1_and_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    write_repo("sr_x4", dir.path(), &cpu_repo_options());
    let Some(mut server) = Server::start(dir.path()) else {
        return;
    };
    // Eight copies of a photo, each many tiles, restored one after another.
    let inputs_dir = tempfile::tempdir().unwrap();
    let img = photo(96, 96);
    let bytes: Vec<u8> = img.data.iter().map(|v| (v * 255.0).round() as u8).collect();
    let rgb = image::RgbImage::from_raw(96, 96, bytes).unwrap();
    let inputs: Vec<PathBuf> = (0..8)
        .map(|i| {
            let p = inputs_dir.path().join(format!("im{i}.png"));
            rgb.save(&p).unwrap();
            p
        })
        .collect();
    let out = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_diffir"));
    cmd.arg("restore")
        .args(&inputs)
        .args(["-o", s(out.path()), "--model", s(&bundles_dir().join("sr_x4"))])
        .args([
            "--triton-url",
            &server.url(),
            "--triton-retry",
            "1",
            "-t",
            "16",
            "--workers",
            "1",
        ])
        .args(["--tile-batch", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Kill the server once the first image is written.
    let start = Instant::now();
    while std::fs::read_dir(out.path()).unwrap().count() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no image written:\n{}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();
    let o = child.wait_with_output().unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("Triton at") && e.contains("unavailable"), "{e}");
    let written: Vec<PathBuf> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!written.is_empty() && written.len() < inputs.len(), "{written:?}\n{e}");
    for p in &written {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(name.starts_with("im") && name.ends_with(".png"), "stray file {name}");
        let decoded = image::open(p).unwrap_or_else(|err| panic!("{name} is not a whole PNG: {err}"));
        assert_eq!((decoded.width(), decoded.height()), (384, 384), "{name}");
    }
    // Every image is accounted for: written, or failed by name.
    for (i, p) in inputs.iter().enumerate() {
        let written_it = written
            .iter()
            .any(|w| w.file_stem().unwrap() == format!("im{i}").as_str());
        assert!(
            written_it || e.contains(s(p)),
            "im{i} neither written nor reported:\n{e}"
        );
    }
}

#[test]
fn the_triton_flags_are_checked_before_anything_runs() {
    let out = tempfile::tempdir().unwrap();
    let input = bundles_dir().join("sr_x4/input.png");
    let model = bundles_dir().join("sr_x4");
    let o = diffir(
        &[
            "restore",
            s(&input),
            "-o",
            s(out.path()),
            "--model",
            s(&model),
            "--backend",
            "triton",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--triton-url"), "{}", stderr(&o));
    let o = diffir(
        &[
            "restore",
            s(&input),
            "-o",
            s(out.path()),
            "--model",
            s(&model),
            "--backend",
            "tract",
            "--triton-url",
            "grpc://127.0.0.1:1",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--backend triton"), "{}", stderr(&o));
    let o = diffir(
        &[
            "restore",
            s(&input),
            "-o",
            s(out.path()),
            "--model",
            s(&model),
            "--triton-url",
            "https://x:1",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("scheme 'https'"), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

#[test]
fn triton_repo_refuses_to_replace_models_without_overwrite_and_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    let model = bundles_dir().join("sr_x2");
    let repo_dir = dir.path().join("repo");
    let run = |extra: &[&str]| {
        let mut args = vec!["triton-repo", "--model", s(&model), "--out", s(&repo_dir)];
        args.extend_from_slice(extra);
        diffir(&args, &[])
    };
    let o = run(&["--cpu"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(repo_dir.join("sr_x2_prior/1/model.onnx").is_file());
    assert!(repo_dir.join("sr_x2_backbone/config.pbtxt").is_file());
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("sr_x2_prior") && stderr(&o).contains("--overwrite"),
        "{}",
        stderr(&o)
    );
    // A version and a file of the user's in the model's folder survive --overwrite: only version 1's model
    // and the config are replaced.
    std::fs::create_dir_all(repo_dir.join("sr_x2_backbone/2")).unwrap();
    std::fs::write(repo_dir.join("sr_x2_backbone/2/model.onnx"), b"v2").unwrap();
    std::fs::write(repo_dir.join("sr_x2_backbone/NOTES.txt"), b"mine").unwrap();
    let o = run(&["--overwrite", "--tensorrt"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let config = std::fs::read_to_string(repo_dir.join("sr_x2_backbone/config.pbtxt")).unwrap();
    assert!(config.contains("tensorrt") && config.contains("KIND_GPU"), "{config}");
    assert_eq!(
        std::fs::read(repo_dir.join("sr_x2_backbone/2/model.onnx")).unwrap(),
        b"v2"
    );
    assert_eq!(
        std::fs::read(repo_dir.join("sr_x2_backbone/NOTES.txt")).unwrap(),
        b"mine"
    );
    let leftovers: Vec<_> = std::fs::read_dir(repo_dir.join("sr_x2_backbone"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let o = run(&["--name", "a/b"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("'a/b'"), "{}", stderr(&o));
    // Nothing half-written is left behind.
    let names: Vec<String> = std::fs::read_dir(&repo_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

/// Run a standalone ONNX model (not a bundle graph) once on onnxruntime's CPU provider with one thread;
/// float32 inputs by name; the named float32 output's shape and values. For checking generated graphs.
fn run_standalone(onnx: &[u8], inputs: &[(&str, &[usize], &[f32])], output: &str) -> (Vec<usize>, Vec<f32>) {
    let rt = diffir::internal::backend::ort_library::runtime().unwrap();
    let mut session = ort::session::Session::builder(&rt.env)
        .unwrap()
        .with_intra_threads(1)
        .unwrap()
        .commit_from_memory(onnx)
        .unwrap();
    let mut values: Vec<(&str, ort::value::DynValue)> = vec![];
    for &(name, shape, data) in inputs {
        let v = ort::value::Tensor::from_array((shape.to_vec(), data.to_vec())).unwrap();
        values.push((name, v.into_dyn()));
    }
    let outputs = session.run(values).unwrap();
    let (shape, data) = outputs[output].try_extract_tensor::<f32>().unwrap();
    (shape.iter().map(|&d| d as usize).collect(), data.to_vec())
}
