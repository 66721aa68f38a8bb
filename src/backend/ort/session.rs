//! onnxruntime sessions as the engine builds them: the provider and its options, fixed shapes, shared
//! weights, the optimised-graph cache, and one run (stopped inside the graph when asked).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use ort::ep::{ArbitrarilyConfigurableExecutionProvider, TensorRT, CPU, CUDA};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;
use ort::value::Tensor as OrtTensor;

use crate::backend::binding::{Bound, Memory};
use crate::backend::capture::Capture;
use crate::backend::optimised_cache::{self, OptimisedKey};
use crate::backend::ort_library::{runtime, Runtime};
use crate::backend::shared_weights::SharedWeights;
use crate::backend::{check_len, tensorrt, EngineOptions, Input, Tensor};
use crate::bundle::{Bundle, GraphKind, Precision};
use crate::error::{Error, Result};

use super::provider::Provider;

/// The input shape a session is planned for, (batch, height, width): the backbone's batch of tiles when the
/// plan has a tile, on every provider, else none (any shape). Static shapes let onnxruntime fold the
/// export's shape arithmetic (on the CPU the built-in backbone then loads in 0.03 s instead of 0.43 s, and
/// runs as fast) and TensorRT build one engine; inputs of other shapes (images smaller than a tile) run on a
/// dynamic-shape session built when first needed.
pub fn fixed_shape(kind: GraphKind, opts: &EngineOptions) -> Option<(usize, usize, usize)> {
    match (kind, opts.tile_shape) {
        (GraphKind::Backbone, Some((h, w))) => Some((opts.tile_batch.max(1), h, w)),
        _ => None,
    }
}

/// The TensorRT optimisation profile (min = opt = max) of the backbone for a fixed batch of tiles.
pub fn backbone_profile(channels: usize, ipr_dim: usize, shape: (usize, usize, usize)) -> String {
    let (n, h, w) = shape;
    format!("image:{n}x{channels}x{h}x{w},ipr:{n}x{ipr_dim}")
}

/// One graph's sessions, one per concurrent worker.
pub(super) type Pool = Vec<Mutex<Runner>>;

/// A session as the engine runs it: plain, or through I/O binding to fixed buffers (`capture`: on the CUDA
/// provider with a CUDA graph, which its first runs capture).
pub(super) enum Runner {
    Plain(Session),
    Bound(Box<Bound>, Option<Capture>),
}

impl Runner {
    /// Run on this session; `cancel` ends a plain session's run inside the graph (bound sessions run
    /// fixed-shape tiles, which the pipeline stops between).
    pub(super) fn run(
        &mut self,
        graph: GraphKind,
        inputs: &[Input<'_>],
        cancel: Option<&AtomicBool>,
    ) -> Result<Tensor> {
        match self {
            Runner::Plain(s) => run_session(s, graph, inputs, cancel),
            Runner::Bound(b, None) => b.run(inputs),
            Runner::Bound(b, Some(capture)) => capture.run(|| b.run(inputs)),
        }
    }
}

/// Whether the CUDA options ask for CUDA graphs (`--cuda-graph`, or `--cuda-option enable_cuda_graph=1`).
pub fn wants_cuda_graph(opts: &EngineOptions) -> bool {
    opts.cuda_options
        .iter()
        .any(|(k, v)| k == "enable_cuda_graph" && (v == "1" || v == "true"))
}

/// The fixed-shape session of `kind` bound to preallocated buffers: pinned host memory on GPU providers
/// (device memory when CUDA graphs are asked for), host memory on the CPU. Err: one line saying why not.
pub(super) fn bound(
    rt: &Runtime,
    bundle: &Bundle,
    opts: &EngineOptions,
    kind: GraphKind,
    p: Provider,
    shape: (usize, usize, usize),
) -> std::result::Result<Runner, String> {
    let graph = p == Provider::Cuda && wants_cuda_graph(opts);
    let memory = match (p, graph) {
        (Provider::Cpu, _) => Memory::Host,
        (_, true) => Memory::Device,
        (_, false) => Memory::Pinned,
    };
    let (n, h, w) = shape;
    let (c, d, s) = (bundle.spec.input_channels, bundle.ipr_dim(), bundle.scale());
    let build = Build {
        fixed: Some(shape),
        cuda_graph: graph,
        ..Build::default()
    };
    let session = session(rt, bundle, opts, kind, p, build)
        .map_err(|e| format!("I/O binding off: the bound session did not start: {e}"))?;
    Bound::new(
        session,
        kind,
        vec![vec![n, c, h, w], vec![n, d]],
        vec![n, 3, h * s, w * s],
        memory,
        opts.device,
    )
    .map(|b| Runner::Bound(Box::new(b), graph.then(Capture::default)))
    .map_err(|e| format!("I/O binding off: {e}"))
}

/// How one session is built, besides the engine's options.
#[derive(Default, Clone, Copy)]
pub(super) struct Build<'a> {
    /// The (batch, height, width) the session is planned for; None: any.
    pub(super) fixed: Option<(usize, usize, usize)>,
    /// Ask the CUDA provider to capture the session in a CUDA graph.
    pub(super) cuda_graph: bool,
    /// Load this optimised model with weights shared with the graph's other sessions.
    pub(super) shared: Option<&'a SharedWeights>,
    /// Write onnxruntime's optimised model here.
    pub(super) save_optimised: Option<&'a std::path::Path>,
    /// Leave a CPU session to onnxruntime's automatic device selection instead of naming the CPU provider's
    /// device (only to show what the pinning prevents: [`providers_used`]).
    pub(super) unpinned: bool,
    /// Write onnxruntime's profile with this file name prefix.
    pub(super) profile: Option<&'a std::path::Path>,
}

/// The CPU execution provider's name.
const CPU_EP: &str = "CPUExecutionProvider";

/// Select the plugin provider's device (`device=` among the plugin options, else the plugin's default) and
/// pass the plugin options; OpenVINO gets its precision (f32 unless the engine runs fp16: f16, bf16 on the
/// CPU) and, on the CPU, its thread count through its load_config, the only settings it honours.
fn plugin_devices(
    rt: &Runtime,
    b: SessionBuilder,
    opts: &EngineOptions,
    p: Provider,
) -> std::result::Result<SessionBuilder, String> {
    use crate::backend::plugin::{self, Plugin};
    let plugin = p.plugin().ok_or("not a plugin provider")?;
    let wanted = plugin::wanted_kind(plugin, &opts.ep_options).map_err(|e| e.to_string())?;
    let kind_of = |d: &ort::device::Device<'_>| plugin::kind_name(d.hardware_device().ty());
    let device = rt
        .env
        .devices()
        .find(|d| d.ep().ok() == Some(plugin.ep_name()) && wanted.is_none_or(|w| kind_of(d) == w))
        .ok_or_else(|| plugin::unavailable(plugin, &opts.ep_options).unwrap_or_default())?;
    let mut options: Vec<(String, String)> = vec![];
    if plugin == Plugin::OpenVino {
        let kind = kind_of(&device);
        let hint = match (opts.precision, kind) {
            (Precision::Fp32, _) => "f32",
            (Precision::Fp16, "cpu") => "bf16",
            (Precision::Fp16, _) => "f16",
        };
        let mut config = serde_json::Map::new();
        config.insert("INFERENCE_PRECISION_HINT".into(), hint.into());
        if kind == "cpu" && opts.threads > 0 {
            config.insert("INFERENCE_NUM_THREADS".into(), opts.threads.to_string().into());
        }
        let load_config = serde_json::json!({ kind.to_ascii_uppercase(): config });
        options.push((format!("{}.load_config", plugin.ep_name()), load_config.to_string()));
    }
    for (k, v) in opts.ep_options.iter().filter(|(k, _)| k != "device") {
        options.push((format!("{}.{k}", plugin.ep_name()), v.clone()));
    }
    b.with_devices([device], Some(&options)).map_err(|e| e.to_string())
}

/// One onnxruntime session for `kind` on provider `p`.
pub(super) fn session(
    rt: &Runtime,
    bundle: &Bundle,
    opts: &EngineOptions,
    kind: GraphKind,
    p: Provider,
    build: Build,
) -> Result<Session> {
    let Build {
        fixed,
        cuda_graph,
        shared,
        save_optimised,
        unpinned,
        profile,
    } = build;
    let fp16 = opts.precision == Precision::Fp16;
    let g = bundle.graph(kind);
    // Building a session allocates its weights on the device: running out there is an out-of-memory error.
    let err = |e: String| Error::graph_or_oom(kind, format!("{}: onnxruntime: {e}", g.origin.display()));
    let mut b: SessionBuilder = Session::builder(&rt.env).map_err(|e| err(e.to_string()))?;
    b = b
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| err(e.to_string()))?;
    b = b
        .with_log_level(ort::logging::LogLevel::Error)
        .map_err(|e| err(e.to_string()))?;
    b = b.with_inter_threads(1).map_err(|e| err(e.to_string()))?;
    if opts.threads > 0 {
        b = b.with_intra_threads(opts.threads).map_err(|e| err(e.to_string()))?;
    }
    if let Some(path) = save_optimised {
        b = b.with_optimized_model_path(path).map_err(|e| err(e.to_string()))?;
    }
    if let Some(shared) = shared {
        b = b
            .with_optimization_level(GraphOptimizationLevel::Disable)
            .map_err(|e| err(e.to_string()))?;
        for (name, value) in &shared.values {
            b = b
                .with_initializer(name, Arc::clone(value))
                .map_err(|e| err(e.to_string()))?;
        }
        b = b
            .with_prepacked_weights(&shared.prepacked)
            .map_err(|e| err(e.to_string()))?;
    }
    if let Some((n, h, w)) = fixed {
        for (name, size) in [("batch", n), ("height", h), ("width", w)] {
            b = b
                .with_dimension_override(name, size as i64)
                .map_err(|e| err(e.to_string()))?;
        }
    }
    let cuda = || {
        // onnxruntime's defaults measured fastest on the real model (BENCHMARKS.md: prefer_nhwc made the whole
        // backbone 8 % slower, use_tf32=0 its convolutions 3-5x slower); `--cuda-option` overrides them.
        let mut ep = CUDA::default().with_device_id(opts.device);
        for (k, v) in &opts.cuda_options {
            // CUDA graphs need inputs and outputs at fixed device addresses: only bound sessions get them.
            if k != "enable_cuda_graph" {
                ep = ep.with_arbitrary_config(k, v);
            }
        }
        if cuda_graph {
            ep = ep.with_cuda_graph(true);
        }
        ep.build().error_on_failure()
    };
    let eps = match p {
        // With several workers, each session's arena would keep a tile's worth of activations; without it
        // intermediate tensors are freed after each run (measured in BENCHMARKS.md: peak memory -30 %, time +7 %).
        Provider::Cpu if opts.workers > 1 => {
            b = b.with_memory_pattern(false).map_err(|e| err(e.to_string()))?;
            vec![CPU::default().with_arena_allocator(false).build()]
        }
        Provider::Cpu => vec![],
        Provider::OpenVino | Provider::WebGpu => {
            b = plugin_devices(rt, b, opts, p).map_err(err)?;
            vec![]
        }
        Provider::Cuda => vec![cuda()],
        Provider::TensorRt => {
            let profile = match fixed {
                Some(t) => backbone_profile(bundle.spec.input_channels, bundle.ipr_dim(), t),
                None => String::new(),
            };
            let key = tensorrt::CacheKey::new(
                &g.bytes,
                &profile,
                fp16,
                &crate::gpus::Devices::probe().name(opts.device),
                &tensorrt::tensorrt_version(),
                &rt.version,
            );
            let mut trt = TensorRT::default()
                .with_device_id(opts.device)
                .with_fp16(fp16)
                .with_layer_norm_fp32_fallback(true);
            if optimised_cache::disk_cache_on() {
                let dir = key.dir(&tensorrt::cache_root());
                std::fs::create_dir_all(&dir).map_err(|e| err(format!("cache folder {}: {e}", dir.display())))?;
                let dir = dir.to_string_lossy().into_owned();
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(&dir)
                    .with_timing_cache(true)
                    .with_timing_cache_path(&dir);
            }
            if !profile.is_empty() {
                trt = trt
                    .with_profile_min_shapes(&profile)
                    .with_profile_opt_shapes(&profile)
                    .with_profile_max_shapes(&profile);
            }
            // Nodes TensorRT does not take run on CUDA.
            vec![trt.build().error_on_failure(), cuda()]
        }
    };
    if !eps.is_empty() {
        b = b.with_execution_providers(eps).map_err(|e| err(e.to_string()))?;
    }
    // `ort` turns on onnxruntime's automatic device selection (the MaxEfficiency policy), and asking for the
    // CPU provider only sets CPU options: with a plugin registered, such a session could run on the plugin
    // (OpenVINO's CPU device, in bf16). Naming the CPU provider's device keeps it on the CPU provider.
    if p == Provider::Cpu && !unpinned {
        let cpu = rt.env.devices().filter(|d| d.ep().ok() == Some(CPU_EP));
        b = b.with_devices(cpu, None).map_err(|e| err(e.to_string()))?;
    }
    if let Some(path) = profile {
        b = b.with_profiling(path).map_err(|e| err(e.to_string()))?;
    }
    match shared {
        Some(shared) => b.commit_from_memory(&shared.model).map_err(|e| err(e.to_string())),
        None => b.commit_from_memory(&g.bytes).map_err(|e| err(e.to_string())),
    }
}

/// `pool` sessions of `kind` on the CPU that load its optimised graph (crate::backend::optimised_cache) and
/// share its weights (crate::backend::shared_weights). A cached graph this onnxruntime cannot load is made
/// again.
pub(super) fn shared_pool(
    rt: &Runtime,
    bundle: &Bundle,
    opts: &EngineOptions,
    kind: GraphKind,
    p: Provider,
    fixed: Option<(usize, usize, usize)>,
    pool: usize,
) -> Result<Vec<Session>> {
    let build = |weights: &SharedWeights| {
        (0..pool)
            .map(|_| {
                let build = Build {
                    fixed,
                    shared: Some(weights),
                    ..Build::default()
                };
                session(rt, bundle, opts, kind, p, build)
            })
            .collect::<Result<Vec<_>>>()
    };
    let weights = optimised(rt, bundle, opts, kind, p, fixed, true)?;
    match (build(&weights), &weights.cached) {
        (Err(_), Some(path)) => {
            let _ = std::fs::remove_file(path);
            build(&optimised(rt, bundle, opts, kind, p, fixed, false)?)
        }
        (r, _) => r,
    }
}

/// `kind` as onnxruntime optimises it for `p` with these options (the same options as the sessions, plus
/// the path it writes the optimised graph to), its weights decoded for sharing. The optimised graph is read
/// from the cache (crate::backend::optimised_cache) when it is there and `use_cache`, else made and stored.
fn optimised(
    rt: &Runtime,
    bundle: &Bundle,
    opts: &EngineOptions,
    kind: GraphKind,
    p: Provider,
    fixed: Option<(usize, usize, usize)>,
    use_cache: bool,
) -> Result<SharedWeights> {
    let g = bundle.graph(kind);
    let err = |e: String| Error::graph(kind, format!("{}: {e}", g.origin.display()));
    let cached = OptimisedKey::new(&g.bytes, fixed, &rt.version).path(&tensorrt::cache_root());
    if use_cache {
        if let Some(bytes) = optimised_cache::read(&cached) {
            if let Ok(mut w) = SharedWeights::from_model(bytes) {
                w.cached = Some(cached);
                return Ok(w);
            }
        }
    }
    let dir = tempfile::tempdir().map_err(|e| err(format!("temporary folder: {e}")))?;
    let path = dir.path().join("optimised.onnx");
    let build = Build {
        fixed,
        save_optimised: Some(&path),
        ..Build::default()
    };
    drop(session(rt, bundle, opts, kind, p, build)?);
    let bytes = std::fs::read(&path).map_err(|e| err(format!("optimised graph {}: {e}", path.display())))?;
    // A cache that cannot be written only costs the next start this optimisation again.
    let _ = optimised_cache::store(&cached, &bytes);
    SharedWeights::from_model(bytes).map_err(err)
}

/// Which execution providers ran the nodes of one `kind` session on provider `p`, built as the engine
/// builds it, in one run on `inputs`: node counts per provider, from onnxruntime's profile. `pinned: false`
/// leaves a CPU session to onnxruntime's automatic device selection, to show what the engine's pinning
/// prevents (tests of the plugin providers).
pub fn providers_used(
    bundle: &Bundle,
    kind: GraphKind,
    opts: &EngineOptions,
    p: Provider,
    pinned: bool,
    inputs: &[Input<'_>],
) -> Result<std::collections::BTreeMap<String, usize>> {
    let rt = runtime()?;
    let dir = tempfile::tempdir().map_err(|e| Error::Backend(format!("temporary folder: {e}")))?;
    let prefix = dir.path().join("profile");
    let build = Build {
        unpinned: !pinned,
        profile: Some(&prefix),
        ..Build::default()
    };
    let mut session = session(rt, bundle, opts, kind, p, build)?;
    run_session(&mut session, kind, inputs, None)?;
    let err = |e: String| Error::graph(kind, format!("profile: {e}"));
    let path = session.end_profiling().map_err(|e| err(e.to_string()))?;
    let text = std::fs::read_to_string(&path).map_err(|e| err(format!("{path}: {e}")))?;
    let events: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| err(format!("{path}: {e}")))?;
    let mut out = std::collections::BTreeMap::new();
    for e in &events {
        if e["cat"] == "Node" {
            if let Some(provider) = e["args"]["provider"].as_str() {
                *out.entry(provider.to_string()).or_insert(0) += 1;
            }
        }
    }
    Ok(out)
}

/// Run `graph` on one session; with `cancel`, the run is ended by onnxruntime's run termination once it is set (polled every 10 ms by a
/// watcher thread while the run lasts): a whole-image run past its deadline stops inside the graph.
pub(super) fn run_session(
    session: &mut Session,
    graph: GraphKind,
    inputs: &[Input<'_>],
    cancel: Option<&AtomicBool>,
) -> Result<Tensor> {
    // The onnxruntime error is kept as the source (out-of-memory errors become Error::OutOfMemory).
    let err = |e: ort::Error| match Error::graph_or_oom(graph, format!("onnxruntime: {e}")) {
        Error::Graph { graph, msg, .. } => Error::Graph {
            graph,
            msg,
            source: Some(Box::new(e)),
        },
        other => other,
    };
    let names = graph.contract().0;
    let mut values: Vec<(&str, ort::value::DynValue)> = Vec::with_capacity(inputs.len());
    for (name, input) in names.iter().zip(inputs) {
        let v = match *input {
            Input::F32(shape, data) => {
                check_len(graph, shape, data.len())?;
                OrtTensor::from_array((shape.to_vec(), data.to_vec()))
                    .map_err(err)?
                    .into_dyn()
            }
            Input::I64(shape, data) => {
                check_len(graph, shape, data.len())?;
                OrtTensor::from_array((shape.to_vec(), data.to_vec()))
                    .map_err(err)?
                    .into_dyn()
            }
        };
        values.push((name, v));
    }
    // Declared before the outputs, which borrow it.
    let options = match cancel {
        Some(_) => Some(ort::session::RunOptions::new().map_err(err)?),
        None => None,
    };
    let outputs = match (cancel, &options) {
        (Some(cancel), Some(options)) => {
            use std::sync::atomic::Ordering;
            let done = AtomicBool::new(false);
            let outputs = std::thread::scope(|scope| {
                let watcher = scope.spawn(|| {
                    while !done.load(Ordering::Acquire) {
                        if cancel.load(Ordering::Relaxed) {
                            let _ = options.terminate();
                            return;
                        }
                        std::thread::park_timeout(std::time::Duration::from_millis(10));
                    }
                });
                let r = session.run_with_options(values, options);
                done.store(true, Ordering::Release);
                watcher.thread().unpark();
                r
            });
            match outputs {
                Ok(o) => o,
                Err(_) if cancel.load(Ordering::Relaxed) => return Err(Error::Cancelled),
                Err(e) => return Err(err(e)),
            }
        }
        _ => session.run(values).map_err(err)?,
    };
    let (shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
    Ok(Tensor {
        shape: shape.iter().map(|&d| d as usize).collect(),
        data: data.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backbone_sessions_planned_for_a_tile_get_a_static_shape() {
        let opts = EngineOptions {
            tile_shape: Some((128, 136)),
            ..Default::default()
        };
        assert_eq!(fixed_shape(GraphKind::Backbone, &opts), Some((1, 128, 136)));
        let batched = EngineOptions {
            tile_batch: 4,
            ..opts.clone()
        };
        assert_eq!(fixed_shape(GraphKind::Backbone, &batched), Some((4, 128, 136)));
        assert_eq!(backbone_profile(3, 64, (4, 128, 136)), "image:4x3x128x136,ipr:4x64");
        assert_eq!(fixed_shape(GraphKind::Backbone, &opts), Some((1, 128, 136)));
        assert_eq!(fixed_shape(GraphKind::CpenFeatures, &opts), None);
        let whole = EngineOptions::default();
        assert_eq!(fixed_shape(GraphKind::Backbone, &whole), None);
    }
}
