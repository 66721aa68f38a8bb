//! onnxruntime backend through `ort`, with the shared library loaded at run time (never linked), so the
//! binary runs everywhere and uses onnxruntime where it is installed.
//!
//! The library is looked for, in order: `ORT_DYLIB_PATH` (only there, when set); next to the executable;
//! the install folder of `scripts/install-onnxruntime.sh` (`$DIFFIR_ORT_DIR`, default
//! `~/.local/share/diffir/onnxruntime`); the system's library path.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};

use ort::ep::{ArbitrarilyConfigurableExecutionProvider, ExecutionProvider, TensorRT, CPU, CUDA};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;
use ort::value::Tensor as OrtTensor;

use super::binding::{Bound, Memory};
use super::capture::{self, run_with_capture_fallback, Capture};
use super::optimised_cache::{self, OptimisedKey};
pub use super::ort_library::{
    install_dir, library_candidates, library_path, library_version, load, GPU_INSTALL_HINT, INSTALL_HINT, ORT_VERSION,
};
pub(crate) use super::ort_library::{runtime, Runtime};
use super::shared_weights::SharedWeights;
use super::{check_len, tensorrt, Engine, EngineOptions, Input, Tensor};
use crate::bundle::{Bundle, GraphKind, Precision};
use crate::error::{Error, Result};

/// onnxruntime execution providers, in `auto`'s order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// NVIDIA TensorRT (through onnxruntime).
    TensorRt,
    /// NVIDIA CUDA.
    Cuda,
    /// The CPU.
    Cpu,
    /// Intel's OpenVINO, loaded as a plugin (crate::backend::plugin): Intel CPUs, GPUs and NPUs.
    OpenVino,
    /// WebGPU, loaded as a plugin (crate::backend::plugin): GPUs through Vulkan, Metal or D3D12.
    WebGpu,
}

impl Provider {
    /// The order `auto` and `ort` try the providers in.
    pub const PREFERENCE: [Provider; 3] = [Provider::TensorRt, Provider::Cuda, Provider::Cpu];

    /// The provider's name as the backend line prints it.
    pub fn name(self) -> &'static str {
        match self {
            Provider::TensorRt => "TensorRT",
            Provider::Cuda => "CUDA",
            Provider::Cpu => "CPU",
            Provider::OpenVino => "OpenVINO",
            Provider::WebGpu => "WebGPU",
        }
    }

    /// Whether the provider is planned as a GPU (one engine per device, one worker, fixed-shape backbone).
    /// OpenVINO is planned as the CPU it runs on by default.
    pub fn is_gpu(self) -> bool {
        matches!(self, Provider::TensorRt | Provider::Cuda | Provider::WebGpu)
    }

    /// Whether the provider comes with onnxruntime-gpu (CUDA 13) rather than the CPU package.
    pub fn needs_gpu_package(self) -> bool {
        matches!(self, Provider::TensorRt | Provider::Cuda)
    }

    /// The plugin library the provider comes in, if it is one.
    pub fn plugin(self) -> Option<super::plugin::Plugin> {
        use super::plugin::Plugin;
        match self {
            Provider::OpenVino => Some(Plugin::OpenVino),
            Provider::WebGpu => Some(Plugin::WebGpu),
            _ => None,
        }
    }
}

/// Run a standalone ONNX model (not a bundle graph) once on the CPU provider with one thread; float32 inputs
/// by name; returns the named float32 output. For checking generated graphs (the Triton prior graph).
pub fn run_standalone(onnx: &[u8], inputs: &[(&str, &[usize], &[f32])], output: &str) -> Result<Tensor> {
    let rt = runtime()?;
    let err = |e: ort::Error| Error::Backend(format!("standalone model: onnxruntime: {e}"));
    let builder = Session::builder(&rt.env).map_err(err)?;
    let mut session = builder
        .with_intra_threads(1)
        .map_err(|e| Error::Backend(format!("standalone model: onnxruntime: {e}")))?
        .commit_from_memory(onnx)
        .map_err(err)?;
    let mut values: Vec<(&str, ort::value::DynValue)> = vec![];
    for &(name, shape, data) in inputs {
        let v = OrtTensor::from_array((shape.to_vec(), data.to_vec())).map_err(err)?;
        values.push((name, v.into_dyn()));
    }
    let outputs = session.run(values).map_err(err)?;
    let (shape, data) = outputs[output].try_extract_tensor::<f32>().map_err(err)?;
    Ok(Tensor {
        shape: shape.iter().map(|&d| d as usize).collect(),
        data: data.to_vec(),
    })
}

/// Why a provider cannot be used here, if it cannot: not compiled into this library (CUDA, TensorRT), or a
/// plugin that is not installed or offers no device of the kind `ep_options` ask for (OpenVINO, WebGPU).
pub fn provider_unavailable(p: Provider, ep_options: &[(String, String)]) -> Option<String> {
    if let Some(plugin) = p.plugin() {
        return super::plugin::unavailable(plugin, ep_options);
    }
    let available = match p {
        Provider::Cpu | Provider::OpenVino | Provider::WebGpu => return None,
        Provider::Cuda => CUDA::is_available(),
        Provider::TensorRt => TensorRT::is_available(),
    };
    match available {
        // The provider is in the build; the CUDA and cuDNN libraries it loads must be on the machine.
        Ok(true) => {
            let rt = runtime().ok()?;
            super::cuda_libs::preload(&rt.path)
                .unusable()
                .map(|why| format!("{}: {why}", p.name()))
        }
        Ok(false) => Some(format!(
            "{}: not in this onnxruntime build ({GPU_INSTALL_HINT})",
            p.name()
        )),
        Err(e) => Some(format!("{}: {e}", p.name())),
    }
}

/// The onnxruntime engine: sessions per graph, on one execution provider.
pub struct OrtEngine {
    /// The sessions and the options they were built with; the backbone's are rebuilt at a smaller shape
    /// after running out of memory ([`Engine::resize`]), so runs take this lock to read.
    state: std::sync::RwLock<State>,
    /// fp32 sessions, built on first use, that redo outputs an fp16 engine got wrong.
    fp32: Vec<OnceLock<std::result::Result<Mutex<Session>, String>>>,
    /// The bundle in float32 (the redo sessions' graphs), when the engine runs fp16.
    bundle_fp32: Bundle,
    /// GPU providers plan the backbone for the tile shape only; images smaller than one tile run on this
    /// dynamic-shape session, built on first use.
    other_shapes: OnceLock<std::result::Result<Mutex<Session>, String>>,
    bundle: Bundle,
    provider: Provider,
    library: PathBuf,
    /// What the engine changed by itself since the last [`Engine::take_notes`] (a CUDA graph capture that
    /// failed and was replaced by the same session without a graph).
    notes: Mutex<Vec<String>>,
}

/// An engine's sessions and the options they were built with.
struct State {
    /// Per graph (indexed by `GraphKind as usize`), a pool of sessions: one per concurrent worker for the
    /// tiled graphs, so parallel tiles do not queue on one session.
    sessions: Vec<Vec<Mutex<Runner>>>,
    /// Why the fixed-shape backbone does not run through I/O binding (or a CUDA graph), when it does not.
    binding_note: Option<String>,
    opts: EngineOptions,
}

impl OrtEngine {
    /// Start sessions on provider `p`; an error says why it cannot run here.
    pub fn start(bundle: &Bundle, opts: &EngineOptions, p: Provider) -> Result<Self> {
        load(p.needs_gpu_package())?;
        let rt = runtime()?;
        if let Some(why) = provider_unavailable(p, &opts.ep_options) {
            return Err(Error::Backend(why));
        }
        let bundle_fp32 = for_provider(bundle, p)?;
        // TensorRT builds its fp16 engines from the float32 graph, and OpenVINO lowers its precision itself (its
        // inference precision hint); the others run the bundle's fp16 backbone.
        let graph_precision = match (p, opts.precision) {
            (Provider::TensorRt | Provider::OpenVino, _) => Precision::Fp32,
            (_, precision) => precision,
        };
        let bundle = match graph_precision {
            Precision::Fp32 => bundle_fp32.clone(),
            precision => for_provider(&bundle.with_precision(precision)?, p)?,
        };
        let (sessions, binding_note) = Self::sessions(rt, &bundle, opts, p)?;
        let engine = OrtEngine {
            state: std::sync::RwLock::new(State {
                sessions,
                binding_note,
                opts: opts.clone(),
            }),
            fp32: GraphKind::ALL.iter().map(|_| OnceLock::new()).collect(),
            bundle_fp32,
            other_shapes: OnceLock::new(),
            bundle,
            provider: p,
            library: rt.path.clone(),
            notes: Mutex::new(vec![]),
        };
        engine.warm_up()?;
        Ok(engine)
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// GPU providers build kernels or engines on the first run: do it now, on the tile shape.
    fn warm_up(&self) -> Result<()> {
        let (tile_shape, n) = {
            let state = self.state();
            (state.opts.tile_shape, state.opts.tile_batch.max(1))
        };
        let (Provider::Cuda | Provider::TensorRt | Provider::WebGpu, Some((h, w))) = (self.provider, tile_shape) else {
            return Ok(());
        };
        let c = self.bundle.spec.input_channels;
        let d = self.bundle.ipr_dim();
        let image = vec![0.5f32; n * c * h * w];
        let ipr = vec![0.0f32; n * d];
        self.run(
            GraphKind::Backbone,
            &[Input::F32(&[n, c, h, w], &image), Input::F32(&[n, d], &ipr)],
        )
        .map(|_| ())
    }

    /// Every graph's session pool, and why the backbone is not bound (when it is not).
    fn sessions(
        rt: &Runtime,
        bundle: &Bundle,
        opts: &EngineOptions,
        p: Provider,
    ) -> Result<(Vec<Pool>, Option<String>)> {
        let mut note = None;
        let pools = GraphKind::ALL
            .into_iter()
            .map(|kind| {
                let (pool, why) = Self::pool(rt, bundle, opts, kind, p)?;
                note = note.take().or(why);
                Ok(pool)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((pools, note))
    }

    /// The session pool of one graph, and why its fixed-shape sessions are not bound (when they are not).
    fn pool(
        rt: &Runtime,
        bundle: &Bundle,
        opts: &EngineOptions,
        kind: GraphKind,
        p: Provider,
    ) -> Result<(Pool, Option<String>)> {
        let size = match kind {
            GraphKind::Backbone | GraphKind::CpenFeatures => opts.workers.max(1),
            _ => 1,
        };
        let fixed = fixed_shape(kind, opts);
        // CPU sessions load the optimised graph (cached across starts) and share its weights; GPU sessions
        // each hold theirs on the device.
        if p == Provider::Cpu && !opts.own_weights && !(fixed.is_some() && opts.bind_io) {
            let pool = shared_pool(rt, bundle, opts, kind, p, fixed, size)?;
            return Ok((pool.into_iter().map(|s| Mutex::new(Runner::Plain(s))).collect(), None));
        }
        let mut note = None;
        let pool = (0..size)
            .map(|_| {
                let (runner, why) = Self::runner(rt, bundle, opts, kind, p)?;
                note = note.take().or(why);
                Ok(Mutex::new(runner))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((pool, note))
    }

    /// One session of `kind` as the engine runs it: bound to buffers of its fixed shape where the plan binds
    /// I/O, else plain; and why binding is off, where it failed.
    fn runner(
        rt: &Runtime,
        bundle: &Bundle,
        opts: &EngineOptions,
        kind: GraphKind,
        p: Provider,
    ) -> Result<(Runner, Option<String>)> {
        let fixed = fixed_shape(kind, opts);
        let plain = || {
            let build = Build {
                fixed,
                ..Build::default()
            };
            session(rt, bundle, opts, kind, p, build).map(Runner::Plain)
        };
        match fixed {
            Some(shape) if opts.bind_io && p.plugin().is_none() => match bound(rt, bundle, opts, kind, p, shape) {
                Ok(r) => Ok((r, None)),
                Err(why) => Ok((plain()?, Some(why))),
            },
            _ => Ok((plain()?, None)),
        }
    }

    /// The backbone session that replaces one whose CUDA graph capture failed: the same session without a
    /// graph.
    fn uncaptured(&self, opts: &EngineOptions) -> Result<Runner> {
        let opts = EngineOptions {
            cuda_options: opts
                .cuda_options
                .iter()
                .filter(|(k, _)| k != "enable_cuda_graph")
                .cloned()
                .collect(),
            ..opts.clone()
        };
        Self::runner(runtime()?, &self.bundle, &opts, GraphKind::Backbone, self.provider).map(|(r, _)| r)
    }

    fn fp32_session(&self, graph: GraphKind) -> Result<&Mutex<Session>> {
        let slot = self.fp32[graph as usize].get_or_init(|| {
            let rt = runtime().map_err(|e| e.to_string())?;
            // Any shape: this session only redoes outputs, of tiles or of whole small images. TensorRT's
            // float32 redo runs on CUDA.
            let p = match self.provider {
                Provider::TensorRt => Provider::Cuda,
                p => p,
            };
            let opts = EngineOptions {
                precision: Precision::Fp32,
                ..self.state().opts.clone()
            };
            session(rt, &self.bundle_fp32, &opts, graph, p, Build::default())
                .map(Mutex::new)
                .map_err(|e| e.to_string())
        });
        slot.as_ref()
            .map_err(|e| Error::graph(graph, format!("fp32 fallback: {e}")))
    }

    /// The session for a backbone input that is not the planned tile shape.
    fn other_shape_session(&self) -> Result<&Mutex<Session>> {
        let graph = GraphKind::Backbone;
        let slot = self.other_shapes.get_or_init(|| {
            let rt = runtime().map_err(|e| e.to_string())?;
            let opts = self.state().opts.clone();
            let (bundle, opts, p) = (&self.bundle, &opts, self.provider);
            let built = if p == Provider::Cpu && !opts.own_weights {
                shared_pool(rt, bundle, opts, graph, p, None, 1).map(|mut v| v.remove(0))
            } else {
                session(rt, bundle, opts, graph, p, Build::default())
            };
            built.map(Mutex::new).map_err(|e| e.to_string())
        });
        slot.as_ref()
            .map_err(|e| Error::graph(graph, format!("dynamic-shape session: {e}")))
    }
}

/// The bundle as provider `p` runs it: on GPU providers every `ReduceL2` is rewritten (crate::graph_rewrite),
/// and TensorRT gets its LayerNorms' channel means back as `ReduceMean`s, so that its fp32 fallback for
/// LayerNorm finds them; once per engine, so every session of the engine (pool, fp32 redo, other shapes)
/// shares the result.
pub fn for_provider(bundle: &Bundle, p: Provider) -> Result<Bundle> {
    let mut out = bundle.clone();
    if !p.is_gpu() {
        return Ok(out);
    }
    for kind in GraphKind::ALL {
        let g = bundle.graph(kind);
        let err = |e: String| Error::graph(kind, format!("{}: rewrite: {e}", g.origin.display()));
        let mut bytes = crate::graph_rewrite::reduce_l2_as_sum_of_squares(&g.bytes).map_err(err)?;
        if p == Provider::TensorRt {
            let source = bytes.as_deref().unwrap_or(&g.bytes);
            if let Some(undone) = crate::graph_rewrite::channel_means_as_reduce_mean(source).map_err(err)? {
                bytes = Some(undone);
            }
        }
        if let Some(bytes) = bytes {
            out = out.with_graph_bytes(kind, bytes);
        }
    }
    Ok(out)
}

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
type Pool = Vec<Mutex<Runner>>;

/// A session as the engine runs it: plain, or through I/O binding to fixed buffers (`capture`: on the CUDA
/// provider with a CUDA graph, which its first runs capture).
enum Runner {
    Plain(Session),
    Bound(Box<Bound>, Option<Capture>),
}

impl Runner {
    /// Run on this session; `cancel` ends a plain session's run inside the graph (bound sessions run
    /// fixed-shape tiles, which the pipeline stops between).
    fn run(&mut self, graph: GraphKind, inputs: &[Input<'_>], cancel: Option<&AtomicBool>) -> Result<Tensor> {
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
fn bound(
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
struct Build<'a> {
    /// The (batch, height, width) the session is planned for; None: any.
    fixed: Option<(usize, usize, usize)>,
    /// Ask the CUDA provider to capture the session in a CUDA graph.
    cuda_graph: bool,
    /// Load this optimised model with weights shared with the graph's other sessions.
    shared: Option<&'a SharedWeights>,
    /// Write onnxruntime's optimised model here.
    save_optimised: Option<&'a std::path::Path>,
    /// Leave a CPU session to onnxruntime's automatic device selection instead of naming the CPU provider's
    /// device (only to show what the pinning prevents: [`providers_used`]).
    unpinned: bool,
    /// Write onnxruntime's profile with this file name prefix.
    profile: Option<&'a std::path::Path>,
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
    use super::plugin::{self, Plugin};
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
fn session(
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
fn shared_pool(
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
fn run_session(
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

impl OrtEngine {
    /// `Engine::run`, and with `cancel` `Engine::run_until`.
    fn run_on(&self, graph: GraphKind, inputs: &[Input<'_>], cancel: Option<&AtomicBool>) -> Result<Tensor> {
        let state = self.state();
        if let (Some((n, h, w)), Some(Input::F32(shape, _))) = (fixed_shape(graph, &state.opts), inputs.first()) {
            if shape.len() == 4 && (shape[0], shape[2], shape[3]) != (n, h, w) {
                drop(state);
                let mut session = self.other_shape_session()?.lock().unwrap_or_else(|e| e.into_inner());
                let _shared = self.device_shared();
                return run_session(&mut session, graph, inputs, cancel);
            }
        }
        let pool = &state.sessions[graph as usize];
        if pool.is_empty() {
            return Err(Error::graph(
                graph,
                "its sessions could not be rebuilt after running out of memory",
            ));
        }
        let mut runner = pool
            .iter()
            .find_map(|m| m.try_lock().ok())
            .unwrap_or_else(|| pool[0].lock().unwrap_or_else(|e| e.into_inner()));
        if let Runner::Bound(_, Some(_)) = &*runner {
            return run_with_capture_fallback(
                &mut *runner,
                |r| matches!(r, Runner::Bound(_, Some(c)) if c.capturing()),
                |r| r.run(graph, inputs, None),
                || self.uncaptured(&state.opts),
                &self.notes,
            );
        }
        let _shared = self.device_shared();
        runner.run(graph, inputs, cancel)
    }
}

impl Engine for OrtEngine {
    fn run(&self, graph: GraphKind, inputs: &[Input<'_>]) -> Result<Tensor> {
        self.run_on(graph, inputs, None)
    }

    fn run_until(&self, graph: GraphKind, inputs: &[Input<'_>], cancel: &AtomicBool) -> Result<Tensor> {
        self.run_on(graph, inputs, Some(cancel))
    }

    fn run_fp32(&self, graph: GraphKind, inputs: &[Input<'_>]) -> Option<Result<Tensor>> {
        if self.state().opts.precision == Precision::Fp32 {
            return None;
        }
        Some(self.fp32_session(graph).and_then(|s| {
            let mut session = s.lock().unwrap_or_else(|e| e.into_inner());
            let _shared = self.device_shared();
            run_session(&mut session, graph, inputs, None)
        }))
    }

    fn fixed_batch(&self, graph: GraphKind) -> Option<usize> {
        fixed_shape(graph, &self.state().opts).map(|(n, _, _)| n)
    }

    /// Rebuild the fixed-shape backbone sessions for `batch` tiles of `tile_shape` (None: the same tile):
    /// the sessions of the old shape are dropped first, so their device memory is free for the new ones.
    fn resize(&self, batch: usize, tile_shape: Option<(usize, usize)>) -> Result<()> {
        let rt = runtime()?;
        let kind = GraphKind::Backbone;
        {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            if fixed_shape(kind, &state.opts).is_none() {
                return Ok(());
            }
            let opts = EngineOptions {
                tile_batch: batch.max(1),
                tile_shape: tile_shape.or(state.opts.tile_shape),
                ..state.opts.clone()
            };
            state.sessions[kind as usize] = vec![];
            let (pool, note) = Self::pool(rt, &self.bundle, &opts, kind, self.provider)?;
            state.sessions[kind as usize] = pool;
            state.binding_note = note;
            state.opts = opts;
        }
        self.warm_up()
    }

    fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut *self.notes.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn describe(&self) -> String {
        let state = self.state();
        let opts = &state.opts;
        let io = match &state.binding_note {
            Some(why) => format!("; {why}"),
            None if !opts.bind_io
                || self.provider.plugin().is_some()
                || fixed_shape(GraphKind::Backbone, opts).is_none() =>
            {
                String::new()
            }
            None if self.provider == Provider::Cuda && wants_cuda_graph(opts) => "; bound I/O, CUDA graph".into(),
            None => "; bound I/O".into(),
        };
        let version = library_version().map_or_else(|| ORT_VERSION.to_string(), |(v, _)| v);
        let plugin = match self.provider.plugin().map(|p| super::plugin::register(p, None)) {
            Some(Ok(path)) => format!("; plugin {}", path.display()),
            _ => String::new(),
        };
        let device = match self.provider {
            Provider::Cuda | Provider::TensorRt => format!(", device {}", opts.device),
            _ => String::new(),
        };
        format!(
            "onnxruntime {version} ({}{device}{io}{plugin}) from {}",
            self.provider.name(),
            self.library.display()
        )
    }
}

impl OrtEngine {
    /// For a run on a CUDA device, the device shared with other runs (a capturing session has it alone:
    /// crate::backend::capture).
    fn device_shared(&self) -> Option<std::sync::RwLockReadGuard<'static, ()>> {
        matches!(self.provider, Provider::Cuda | Provider::TensorRt).then(capture::device_shared)
    }
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

#[cfg(test)]
mod version_tests {
    use super::*;

    /// The version is pinned once, in the exporter's dependencies; the runtime must say the same.
    #[test]
    fn runtime_version_matches_the_pinned_package() {
        let pyproject = include_str!("../../export/pyproject.toml");
        assert!(
            pyproject.contains(&format!("\"onnxruntime=={ORT_VERSION}\"")),
            "export/pyproject.toml must pin onnxruntime=={ORT_VERSION}"
        );
        assert!(super::super::ort_library::LIB_NAME.ends_with(ORT_VERSION));
    }
}
