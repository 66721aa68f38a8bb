//! Inference backends behind one small trait: pure-Rust tract, and onnxruntime loaded at run time.

use std::fmt;
use std::str::FromStr;

use crate::bundle::{Bundle, GraphKind, Precision};
use crate::error::{Error, Result};
use crate::plan::{Plan, PlanRequest};

pub mod binding;
pub mod cuda_libs;
pub mod multi;
pub mod optimised_cache;
pub mod ort;
pub mod plugin;
pub mod shared_weights;
pub mod tensorrt;
pub mod tract;

/// A borrowed input tensor.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Float32 values with their shape.
    F32(&'a [usize], &'a [f32]),
    /// Int64 values with their shape (the denoiser's timestep).
    I64(&'a [usize], &'a [i64]),
}

/// An owned float32 output tensor (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The shape (row-major).
    pub shape: Vec<usize>,
    /// The values.
    pub data: Vec<f32>,
}

/// Runs the bundle's graphs. Implementations are shareable across threads (`&self`).
pub trait Engine: Send + Sync {
    /// Run one graph on inputs given in the graph contract's order; returns its single output.
    fn run(&self, graph: GraphKind, inputs: &[Input<'_>]) -> Result<Tensor>;
    /// Run again at full float32 precision, for backends that run reduced precision (fp16);
    /// None where `run` already is float32.
    fn run_fp32(&self, _graph: GraphKind, _inputs: &[Input<'_>]) -> Option<Result<Tensor>> {
        None
    }
    /// The batch size a graph is planned for, where it takes no other (fixed-shape GPU sessions): smaller
    /// batches are padded up to it. None: any batch.
    fn fixed_batch(&self, _graph: GraphKind) -> Option<usize> {
        None
    }
    /// Rebuild the fixed-shape backbone for `batch` tiles of `tile_shape` (None: the tile it has) after
    /// running out of memory, so that smaller calls run on sessions of the smaller shape; engines without a
    /// fixed shape have nothing to do.
    fn resize(&self, _batch: usize, _tile_shape: Option<(usize, usize)>) -> Result<()> {
        Ok(())
    }
    /// What the engine changed by itself since it was last asked (for example a CUDA graph capture that
    /// failed and was replaced by the same session without a graph); the pipeline passes them on with the
    /// restore's notes.
    fn take_notes(&self) -> Vec<String> {
        vec![]
    }
    /// The whole prior (CPEN and the reverse diffusion) in one call, for engines that run it as one graph
    /// (the Triton backend); None where the pipeline runs CPEN and the denoiser itself.
    fn prior(&self, _x: &[f32], _shape: &[usize; 4], _noise: &[f32]) -> Option<Result<Vec<f32>>> {
        None
    }
    /// A short description, e.g. "tract (CPU)" or "onnxruntime 1.31.1 (CPU)".
    fn describe(&self) -> String;
}

/// Which backend to use (`--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    /// onnxruntime when its library is found (TensorRT, then CUDA, then CPU), else tract.
    #[default]
    Auto,
    /// Pure-Rust tract on the CPU; always available.
    Tract,
    /// onnxruntime with the best execution provider that starts.
    Ort,
    /// onnxruntime, CPU execution provider.
    OrtCpu,
    /// onnxruntime, CUDA execution provider (no fallback).
    OrtCuda,
    /// onnxruntime, TensorRT execution provider (no fallback).
    OrtTensorrt,
    /// onnxruntime with the OpenVINO plugin (Intel CPUs, GPUs, NPUs; its CPU device by default).
    OrtOpenvino,
    /// onnxruntime with the WebGPU plugin (GPUs through Vulkan, Metal or D3D12).
    OrtWebgpu,
    /// A Triton Inference Server holding a `diffir triton-repo` repository (needs its address:
    /// [`crate::Pipeline::start_triton`], `--triton-url`).
    Triton,
}

impl BackendKind {
    /// Every backend with its name: the one definition of the names `--backend` takes.
    pub const TABLE: [(BackendKind, &'static str); 9] = [
        (BackendKind::Auto, "auto"),
        (BackendKind::Tract, "tract"),
        (BackendKind::Ort, "ort"),
        (BackendKind::OrtCpu, "ort-cpu"),
        (BackendKind::OrtCuda, "ort-cuda"),
        (BackendKind::OrtTensorrt, "ort-tensorrt"),
        (BackendKind::OrtOpenvino, "ort-openvino"),
        (BackendKind::OrtWebgpu, "ort-webgpu"),
        (BackendKind::Triton, "triton"),
    ];

    /// The names, in `TABLE`'s order.
    pub const NAMES: [&'static str; 9] = {
        let mut out = [""; 9];
        let mut i = 0;
        while i < out.len() {
            out[i] = Self::TABLE[i].1;
            i += 1;
        }
        out
    };

    /// This backend's name.
    pub fn name(self) -> &'static str {
        Self::TABLE.iter().find(|(k, _)| *k == self).map_or("auto", |(_, n)| n)
    }
}

impl BackendKind {
    /// The onnxruntime providers this backend tries, in order; None for tract and Triton.
    pub fn providers(self) -> Option<&'static [ort::Provider]> {
        use self::ort::Provider;
        match self {
            BackendKind::Tract | BackendKind::Triton => None,
            BackendKind::OrtCpu => Some(&[Provider::Cpu]),
            BackendKind::OrtCuda => Some(&[Provider::Cuda]),
            BackendKind::OrtTensorrt => Some(&[Provider::TensorRt]),
            BackendKind::OrtOpenvino => Some(&[Provider::OpenVino]),
            BackendKind::OrtWebgpu => Some(&[Provider::WebGpu]),
            BackendKind::Ort | BackendKind::Auto => Some(&Provider::PREFERENCE),
        }
    }
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::TABLE
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(k, _)| *k)
            .ok_or_else(|| format!("unknown backend '{s}' (one of {})", Self::NAMES.join(", ")))
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What one engine is built with: the part of a [`Plan`] for one device, plus provider options.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Threads one graph run may use (0 = the backend's default).
    pub threads: usize,
    /// GPU index for the CUDA and TensorRT providers.
    pub device: i32,
    /// How many graph runs may happen at once (parallel tiles); backends that serialise runs per session
    /// keep this many sessions of the tiled graphs.
    pub workers: usize,
    /// The backbone's precision: fp16 runs the bundle's fp16 backbone (onnxruntime CUDA/CPU) or TensorRT's
    /// fp16 engines; outputs with NaN/Inf are redone in fp32.
    pub precision: Precision,
    /// The fixed input size (padded tile, H×W) of the backbone: TensorRT's optimisation profile, and the
    /// static shape GPU providers plan for (other sizes run on a second, dynamic-shape session).
    pub tile_shape: Option<(usize, usize)>,
    /// Tiles per backbone call; GPU providers plan their fixed shape for this batch.
    pub tile_batch: usize,
    /// Extra CUDA execution provider options (`--cuda-option KEY=VALUE`), applied after the defaults.
    /// `enable_cuda_graph=1` binds the fixed-shape backbone to device memory and captures it.
    pub cuda_options: Vec<(String, String)>,
    /// Plugin provider options (`--ep-option KEY=VALUE`, OpenVINO and WebGPU): `device=cpu|gpu|npu` picks
    /// the plugin's device; other keys go to the plugin as given.
    pub ep_options: Vec<(String, String)>,
    /// Run the fixed-shape backbone through I/O binding to preallocated buffers (set for GPU plans; on the
    /// CPU provider it makes the backbone fixed-shape too, which the tests use to check the binding path).
    pub bind_io: bool,
    /// Give every CPU session its own copy of the weights, as onnxruntime does by default (for measuring
    /// what sharing saves); false: the sessions of a graph share one copy (crate::backend::shared_weights).
    pub own_weights: bool,
}

impl EngineOptions {
    /// The options of the engine for `device` under `plan`.
    pub fn from_plan(plan: &Plan, device: i32, bundle: &Bundle, provider: &ProviderOptions) -> Self {
        EngineOptions {
            threads: plan.threads,
            device,
            workers: plan.workers_per_device(),
            precision: plan.precision,
            tile_shape: crate::pipeline::Tiling {
                tile: plan.tile,
                overlap: 0,
            }
            .tile_shape(bundle.spec.size_multiple),
            tile_batch: plan.tile_batch.max(1),
            cuda_options: provider.cuda.clone(),
            ep_options: provider.ep.clone(),
            bind_io: !plan.devices.is_empty(),
            own_weights: false,
        }
    }
}

/// Provider settings that are not part of a plan: CUDA options, plugin options and the plugin's library.
#[derive(Debug, Clone, Default)]
pub struct ProviderOptions {
    /// Extra CUDA execution provider options (`--cuda-option`).
    pub cuda: Vec<(String, String)>,
    /// Plugin provider options (`--ep-option`): `device=cpu|gpu|npu`, other keys as the plugin takes them.
    pub ep: Vec<(String, String)>,
    /// The plugin library of `ort-openvino` / `ort-webgpu` (`--ep-library`); None: looked for
    /// (crate::backend::plugin).
    pub ep_library: Option<std::path::PathBuf>,
    /// Fail instead of running anywhere but an NVIDIA GPU (`--require-gpu`). Default: false (`auto` then
    /// runs on the CPU when the CUDA provider cannot start, with a warning where a GPU is there).
    pub require_gpu: bool,
}

/// A started backend: the engine, the plan it runs, and what was chosen and why.
pub struct Started {
    /// The engine (one per device behind a dispatcher where there are several).
    pub engine: Box<dyn Engine>,
    /// The plan it runs.
    pub plan: Plan,
    /// Everything: the library's path, each provider skipped and why.
    pub line: String,
    /// One short line: the backend, its plan, and in a few words why.
    pub summary: String,
    /// The onnxruntime provider that runs; None for tract and Triton.
    pub provider: Option<ort::Provider>,
}

impl Started {
    /// What runs, in a few words: "onnxruntime CUDA", "onnxruntime CPU", "tract", "Triton".
    pub fn runs_on(&self) -> String {
        match self.provider {
            Some(p) => format!("onnxruntime {}", p.name()),
            None => self
                .engine
                .describe()
                .split_whitespace()
                .next()
                .unwrap_or("tract")
                .to_string(),
        }
    }
}

/// Start the requested backend with a plan decided for the provider that starts (a GPU gets one engine per
/// device; the CPU one tile per thread).
///
/// `auto` tries TensorRT, CUDA, onnxruntime CPU, then tract, and says why it skipped each; an explicitly
/// requested backend that cannot start is an error.
///
/// Where this machine has an NVIDIA GPU but `auto` (or `ort`) starts elsewhere, the summary carries one
/// warning line that says why the CUDA provider did not start and how to fix it; with
/// [`ProviderOptions::require_gpu`] that is an error instead.
pub fn start(kind: BackendKind, bundle: &Bundle, req: &PlanRequest, provider: &ProviderOptions) -> Result<Started> {
    let mut cuda_failed = None;
    let mut started = start_any(kind, bundle, req, provider, &mut cuda_failed)?;
    let on_gpu = started.provider.is_some_and(|p| p.needs_gpu_package());
    if on_gpu {
        return Ok(started);
    }
    let devices = matches!(kind, BackendKind::Auto | BackendKind::Ort).then(crate::gpus::Devices::probe);
    match devices.filter(|d| d.any()) {
        Some(devices) => {
            let why = cuda_failed
                .unwrap_or_else(|| "the CUDA provider was not tried".into())
                .replace('\n', " ");
            let line = format!(
                "this machine has an NVIDIA GPU ({}) but runs on {}: CUDA did not start: {why}",
                devices.name(0),
                started.runs_on()
            );
            if provider.require_gpu {
                return Err(Error::Backend(format!("--require-gpu: {line}")));
            }
            started.summary += &format!("\nwarning: {line}");
            started.line += &format!("\nwarning: {line}");
            Ok(started)
        }
        None if provider.require_gpu => Err(Error::Backend(format!(
            "--require-gpu: runs on {}, not on an NVIDIA GPU{}",
            started.runs_on(),
            cuda_failed.map_or(String::new(), |why| format!(" (CUDA did not start: {why})"))
        ))),
        None => Ok(started),
    }
}

/// `start` without the GPU check: `cuda_failed` gets why the CUDA provider did not start, where it was tried.
fn start_any(
    kind: BackendKind,
    bundle: &Bundle,
    req: &PlanRequest,
    provider: &ProviderOptions,
    cuda_failed: &mut Option<String>,
) -> Result<Started> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let available = crate::plan::available_memory();
    let tract = |why: String| -> Result<Started> {
        if req.precision != Precision::Fp32 {
            return Err(Error::Backend(format!(
                "tract runs float32 only: --precision {} needs an onnxruntime backend{why}",
                req.precision
            )));
        }
        let plan = Plan::resolve(false, req, bundle, cores, available, |_| None);
        let engine = tract::TractEngine::new(bundle, &EngineOptions::from_plan(&plan, 0, bundle, provider))?;
        let mut line = format!("backend: {} [{plan}]{why}", engine.describe());
        if let Some(n) = &plan.note {
            line += &format!(" ({n})");
        }
        let mut summary = match kind {
            BackendKind::Tract => format!("backend: tract [{plan}]"),
            _ => format!("backend: tract [{plan}] (onnxruntime not found; -v says where it was looked for)"),
        };
        if let Some(n) = &plan.note {
            summary += &format!(" ({n})");
        }
        Ok(Started {
            engine: Box::new(engine),
            plan,
            line,
            summary,
            provider: None,
        })
    };
    if kind == BackendKind::Triton {
        return Err(Error::Backend(
            "the triton backend needs the server's address: --triton-url grpc://HOST:PORT \
             (Pipeline::start_triton in the library)"
                .into(),
        ));
    }
    let Some(providers) = kind.providers() else {
        return tract(" (requested)".into());
    };
    let gpu_only = providers.iter().all(|p| p.needs_gpu_package());
    if let Err(e) = ort::load(gpu_only) {
        *cuda_failed = Some(format!("{e}; for the GPU, {}", ort::GPU_INSTALL_HINT));
        return match kind {
            BackendKind::Auto => tract(format!(" (onnxruntime unavailable: {e})")),
            _ => Err(e),
        };
    }
    let mut notes = vec![];
    for &p in providers {
        if let (Some(plugin), Some(path)) = (p.plugin(), &provider.ep_library) {
            plugin::register(plugin, Some(path))?;
        }
        if let Some(why) = ort::provider_unavailable(p, &provider.ep) {
            if p == ort::Provider::Cuda {
                *cuda_failed = Some(why.clone());
            }
            notes.push(why);
            continue;
        }
        // Only NVIDIA GPUs say how much memory is free (nvidia-smi); a WebGPU plan uses the fallback tile.
        let devices = p.needs_gpu_package().then(crate::gpus::Devices::probe);
        let gpu_free = |d: i32| devices.as_ref().and_then(|g| g.free_bytes(d));
        let plan = Plan::resolve(p.is_gpu(), req, bundle, cores, available, gpu_free);
        let engines = start_fitting(plan, bundle.spec.size_multiple, |plan| {
            plan.devices
                .iter()
                .copied()
                .chain(plan.devices.is_empty().then_some(0))
                .map(|device| {
                    let opts = EngineOptions::from_plan(plan, device, bundle, provider);
                    ort::OrtEngine::start(bundle, &opts, p).map(|e| Box::new(e) as Box<dyn Engine>)
                })
                .collect::<Result<Vec<_>>>()
        });
        match engines {
            Ok((mut engines, plan)) => {
                let engine = if engines.len() == 1 {
                    engines.pop().expect("one engine")
                } else {
                    Box::new(multi::MultiDevice::new(engines))
                };
                let mut line = format!("backend: {} [{plan}]", engine.describe());
                if let Some(n) = &plan.note {
                    line += &format!(" ({n})");
                }
                line += &fallback_notes(&notes);
                let (version, warning) = ort::library_version().unwrap_or_default();
                let mut summary = format!("backend: onnxruntime {version} {} [{plan}]", p.name());
                if let Some(n) = plan
                    .note
                    .as_ref()
                    .filter(|n| n.contains("--threads") || n.contains("--workers") || n.contains(REPLANNED))
                {
                    summary += &format!(" ({n})");
                }
                if !notes.is_empty() {
                    let skipped: Vec<&str> = providers[..providers.iter().position(|&q| q == p).unwrap_or(0)]
                        .iter()
                        .map(|q| q.name())
                        .collect();
                    summary += &format!(" ({} not available here; -v says why)", skipped.join(", "));
                }
                if let Some(w) = warning {
                    summary += &format!("\n{w}");
                    line += &format!("\n{w}");
                }
                return Ok(Started {
                    engine,
                    plan,
                    line,
                    summary,
                    provider: Some(p),
                });
            }
            Err(e) => {
                if p == ort::Provider::Cuda {
                    *cuda_failed = Some(format!("{e} (`diffir info --backend ort-cuda` lists its libraries)"));
                }
                notes.push(format!("{}: {e}", p.name()))
            }
        }
    }
    if kind == BackendKind::Auto {
        return tract(format!(" (onnxruntime unavailable: {})", notes.join("; ")));
    }
    Err(Error::Backend(format!(
        "onnxruntime could not start: {}",
        notes.join("; ")
    )))
}

/// The words a plan note uses for a re-plan at start-up (the summary line keeps such notes).
const REPLANNED: &str = "re-planned";

/// Start with `plan`; where the start (a GPU engine's warm-up on the planned batch of tiles) runs out of
/// memory, re-plan with half the batch, then half the tile ([`crate::plan::shrink`]), until it fits.
/// Returns what started and the plan it runs, whose note says what was re-planned.
pub fn start_fitting<E>(
    mut plan: Plan,
    multiple: usize,
    mut start: impl FnMut(&Plan) -> Result<E>,
) -> Result<(E, Plan)> {
    let mut notes = vec![];
    loop {
        match start(&plan) {
            Ok(started) => {
                if !notes.is_empty() {
                    let replans = notes.join("; ");
                    plan.note = Some(match plan.note.take() {
                        Some(n) => format!("{n}; {replans}"),
                        None => replans,
                    });
                }
                return Ok((started, plan));
            }
            Err(Error::OutOfMemory { graph, msg }) if plan.tile > 0 => {
                let Some((batch, tile)) = crate::plan::shrink(plan.tile_batch, plan.tile, multiple) else {
                    return Err(Error::OutOfMemory {
                        graph,
                        msg: format!("{msg} (even one tile of {} pixels does not fit)", plan.tile),
                    });
                };
                notes.push(format!(
                    "out of memory starting {} tile(s) of {} per batch; {REPLANNED} to {batch} tile(s) of {tile}",
                    plan.tile_batch, plan.tile
                ));
                plan.tile_batch = batch;
                plan.tile = tile;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Start `kind` with exactly these engine options (no plan): the building block for tests and benches that
/// compare backends at equal settings. Returns the engine and its description.
pub fn select(kind: BackendKind, bundle: &Bundle, opts: &EngineOptions) -> Result<(Box<dyn Engine>, String)> {
    if kind == BackendKind::Triton {
        return Err(Error::Backend(
            "the triton backend needs the server's address: use TritonEngine::connect".into(),
        ));
    }
    let Some(providers) = kind.providers() else {
        let engine = tract::TractEngine::new(bundle, opts)?;
        let line = engine.describe();
        return Ok((Box::new(engine), line));
    };
    let mut notes = vec![];
    for &p in providers {
        match ort::OrtEngine::start(bundle, opts, p) {
            Ok(engine) => {
                let line = engine.describe();
                return Ok((Box::new(engine), line));
            }
            Err(e) => notes.push(format!("{}: {e}", p.name())),
        }
    }
    Err(Error::Backend(format!(
        "onnxruntime could not start: {}",
        notes.join("; ")
    )))
}

fn fallback_notes(notes: &[String]) -> String {
    if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join("; "))
    }
}

pub(crate) fn shape_str(shape: &[usize]) -> String {
    shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
}

pub(crate) fn check_len(graph: GraphKind, shape: &[usize], len: usize) -> Result<()> {
    if shape.iter().product::<usize>() != len {
        return Err(Error::graph(
            graph,
            format!("input shape {} does not match {len} values", shape_str(shape)),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu_plan(tile: usize, tile_batch: usize) -> Plan {
        Plan {
            devices: vec![0],
            workers: 1,
            threads: 1,
            tile_batch,
            tile,
            precision: Precision::Fp32,
            note: None,
        }
    }

    /// A fake start that runs out of memory above `limit` input pixels per call (as a warm-up on the
    /// planned batch of tiles does), and counts its tries.
    fn fake_start(limit: usize, tries: &std::cell::Cell<usize>) -> impl FnMut(&Plan) -> Result<(usize, usize)> + '_ {
        move |plan: &Plan| {
            tries.set(tries.get() + 1);
            let pixels = plan.tile_batch * plan.tile * plan.tile;
            if pixels > limit {
                Err(Error::OutOfMemory {
                    graph: GraphKind::Backbone,
                    msg: format!("CUDA failure 2: out of memory ({pixels} pixels)"),
                })
            } else {
                Ok((plan.tile_batch, plan.tile))
            }
        }
    }

    /// The defect: an out-of-memory error in the warm-up made the engine fail to start (and `auto` went on
    /// to the CPU). Now the start re-plans: half the batch, then half the tile, until the warm-up fits.
    #[test]
    fn a_start_that_runs_out_of_memory_is_re_planned_smaller() {
        let tries = std::cell::Cell::new(0);
        // 8 x 512² does not fit 100,000 pixels: batch 8 -> 4 -> 2 -> 1, then tile 512 -> 256 (65,536).
        let (started, plan) = start_fitting(gpu_plan(512, 8), 8, fake_start(100_000, &tries)).unwrap();
        assert_eq!(started, (1, 256), "{plan:?}");
        assert_eq!(tries.get(), 5);
        assert_eq!((plan.tile_batch, plan.tile), started);
        let note = plan.note.unwrap();
        assert_eq!(note.matches(REPLANNED).count(), tries.get() - 1, "{note}");
        assert!(note.contains("8 tile(s) of 512"), "{note}");
        // What fits at once is not re-planned.
        let tries = std::cell::Cell::new(0);
        let (_, plan) = start_fitting(gpu_plan(256, 2), 8, fake_start(1 << 20, &tries)).unwrap();
        assert_eq!((plan.tile_batch, plan.tile, plan.note, tries.get()), (2, 256, None, 1));
        // Nothing fits: a typed error that says so.
        let tries = std::cell::Cell::new(0);
        match start_fitting(gpu_plan(64, 2), 8, fake_start(0, &tries)) {
            Err(Error::OutOfMemory { msg, .. }) => assert!(msg.contains("does not fit"), "{msg}"),
            other => panic!("expected out of memory, got {:?}", other.map(|(_, p)| p)),
        }
        // Other errors are not retried.
        let tries = std::cell::Cell::new(0);
        let failing = |_: &Plan| -> Result<()> {
            tries.set(tries.get() + 1);
            Err(Error::Backend(
                "CUDA failure 100: no CUDA-capable device is detected".into(),
            ))
        };
        assert!(matches!(
            start_fitting(gpu_plan(64, 2), 8, failing),
            Err(Error::Backend(_))
        ));
        assert_eq!(tries.get(), 1);
    }

    #[test]
    fn every_backend_name_round_trips_and_is_unique() {
        for (kind, name) in BackendKind::TABLE {
            assert_eq!(name.parse::<BackendKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), name);
        }
        let mut names = BackendKind::NAMES.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), BackendKind::TABLE.len());
        assert!("cuda".parse::<BackendKind>().unwrap_err().contains("ort-cuda"));
    }
}
