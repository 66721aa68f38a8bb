//! Inference backends behind one small trait: pure-Rust tract, and onnxruntime loaded at run time.

use std::fmt;
use std::str::FromStr;

use crate::bundle::{Bundle, GraphKind};
use crate::error::{Error, Result};

pub mod ort;
pub mod tensorrt;
pub mod tract;

/// A borrowed input tensor.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    F32(&'a [usize], &'a [f32]),
    I64(&'a [usize], &'a [i64]),
}

/// An owned float32 output tensor (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Runs the bundle's graphs. Implementations are shareable across threads (`&self`).
pub trait Engine: Send + Sync {
    /// Run one graph on inputs given in the graph contract's order; returns its single output.
    fn run(&self, graph: GraphKind, inputs: &[Input<'_>]) -> Result<Tensor>;
    /// Run again at full float32 precision, for backends that run reduced precision (TensorRT fp16);
    /// None where `run` already is float32.
    fn run_fp32(&self, _graph: GraphKind, _inputs: &[Input<'_>]) -> Option<Result<Tensor>> {
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
}

impl BackendKind {
    pub const NAMES: [&'static str; 6] = ["auto", "tract", "ort", "ort-cpu", "ort-cuda", "ort-tensorrt"];
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "auto" => BackendKind::Auto,
            "tract" => BackendKind::Tract,
            "ort" => BackendKind::Ort,
            "ort-cpu" => BackendKind::OrtCpu,
            "ort-cuda" => BackendKind::OrtCuda,
            "ort-tensorrt" => BackendKind::OrtTensorrt,
            _ => {
                return Err(format!(
                    "unknown backend '{s}' (one of {})",
                    BackendKind::NAMES.join(", ")
                ))
            }
        })
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = [
            BackendKind::Auto,
            BackendKind::Tract,
            BackendKind::Ort,
            BackendKind::OrtCpu,
            BackendKind::OrtCuda,
            BackendKind::OrtTensorrt,
        ]
        .iter()
        .position(|k| k == self)
        .unwrap_or(0);
        f.write_str(BackendKind::NAMES[i])
    }
}

/// Options that every backend understands.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Threads one graph run may use (0 = the backend's default).
    pub threads: usize,
    /// GPU index for the CUDA and TensorRT providers.
    pub device: i32,
    /// How many graph runs may happen at once (parallel tiles); backends that serialise runs per session
    /// keep this many sessions of the tiled graphs.
    pub workers: usize,
    /// TensorRT: build fp16 engines (LayerNorm kept in fp32; outputs with NaN/Inf are redone in fp32).
    pub fp16: bool,
    /// The fixed input size (padded tile, H×W) of the backbone: TensorRT's optimisation profile, and the
    /// static shape GPU providers plan for (other sizes run on a second, dynamic-shape session).
    pub tile_shape: Option<(usize, usize)>,
    /// Extra CUDA execution provider options (`--cuda-option KEY=VALUE`), applied after the defaults.
    pub cuda_options: Vec<(String, String)>,
}

impl EngineOptions {
    /// Split `threads` (0 = every core) between parallel tiles and threads inside one graph run, the way
    /// that measured fastest (BENCHMARKS.md): on the CPU, single-threaded runs of one tile per thread beat
    /// one multi-threaded run at a time for both tract and onnxruntime; GPU providers take one tile at a
    /// time. `workers` overrides the split.
    pub fn for_backend(kind: BackendKind, threads: usize, workers: Option<usize>, device: i32) -> EngineOptions {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let workers = workers.unwrap_or(match kind {
            BackendKind::OrtCuda | BackendKind::OrtTensorrt => 1,
            _ => threads,
        });
        let workers = workers.clamp(1, threads.max(1));
        EngineOptions {
            threads: (threads / workers).max(1),
            device,
            workers,
            fp16: false,
            tile_shape: None,
            cuda_options: vec![],
        }
    }
}

/// Start the requested backend. Returns the engine and one line saying what was chosen and why.
///
/// `auto` falls back (onnxruntime → tract) and says why; an explicitly requested backend that cannot start
/// is an error.
pub fn select(kind: BackendKind, bundle: &Bundle, opts: &EngineOptions) -> Result<(Box<dyn Engine>, String)> {
    use self::ort::Provider;
    let tract = |why: String| -> Result<(Box<dyn Engine>, String)> {
        let engine = tract::TractEngine::new(bundle, opts)?;
        let line = format!("backend: {}{why}", engine.describe());
        Ok((Box::new(engine), line))
    };
    match kind {
        BackendKind::Tract => tract(" (requested)".into()),
        BackendKind::OrtCpu => ort_only(bundle, opts, &[Provider::Cpu]),
        BackendKind::OrtCuda => ort_only(bundle, opts, &[Provider::Cuda]),
        BackendKind::OrtTensorrt => ort_only(bundle, opts, &[Provider::TensorRt]),
        BackendKind::Ort => ort_only(bundle, opts, &Provider::PREFERENCE),
        BackendKind::Auto => match ort::OrtEngine::new(bundle, opts, &Provider::PREFERENCE) {
            Ok((engine, notes)) => {
                let line = format!("backend: {}{}", engine.describe(), fallback_notes(&notes));
                Ok((Box::new(engine), line))
            }
            Err(e) => tract(format!(" (onnxruntime unavailable: {e})")),
        },
    }
}

fn ort_only(bundle: &Bundle, opts: &EngineOptions, providers: &[ort::Provider]) -> Result<(Box<dyn Engine>, String)> {
    let (engine, notes) = ort::OrtEngine::new(bundle, opts, providers)?;
    let line = format!("backend: {}{}", engine.describe(), fallback_notes(&notes));
    Ok((Box::new(engine), line))
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
            graph.name(),
            format!("input shape {} does not match {len} values", shape_str(shape)),
        ));
    }
    Ok(())
}
