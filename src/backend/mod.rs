//! Inference backends behind one small trait: pure-Rust tract, and onnxruntime loaded at run time.

use std::fmt;
use std::str::FromStr;

use crate::bundle::{Bundle, GraphKind, Precision};
use crate::error::{Error, Result};

pub mod binding;
pub mod capture;
pub mod cuda_libs;
pub mod multi;
pub mod optimised_cache;
pub mod ort;
pub mod ort_library;
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
    /// `run`, stopped as soon as it can once `cancel` is set ([`Error::Cancelled`](crate::Error::Cancelled)):
    /// onnxruntime terminates the run inside the graph; engines that cannot stop a run inside a graph run
    /// it to the end (the pipeline still stops between tiles).
    fn run_until(
        &self,
        graph: GraphKind,
        inputs: &[Input<'_>],
        _cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<Tensor> {
        self.run(graph, inputs)
    }
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
    /// Plans or sessions the engine keeps per input shape (bounded), where it keeps them (tract).
    fn cached_plans(&self) -> Option<usize> {
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
    /// [`crate::RestoreOptions::triton`], `--triton-url`).
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

/// What one engine is built with: the part of a plan (crate::plan::Plan) for one device, plus provider
/// options.
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
