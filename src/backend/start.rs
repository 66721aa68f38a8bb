//! Starting a backend: the provider chosen (and each one skipped, and why), the plan decided for it,
//! re-planned smaller where the start runs out of memory, and a warning where this machine has a GPU that
//! the work does not run on.

use std::fmt;

use super::{multi, ort, plugin, tract, BackendKind, Engine, EngineOptions, ProviderOptions};
use crate::bundle::{Bundle, Precision};
use crate::error::{Error, Result};
use crate::plan::{Plan, PlanRequest};

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
    /// What runs.
    pub runs_on: RunsOn,
}

/// What runs a pipeline's graphs: the provider that started, which `auto` may have chosen over the one
/// preferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunsOn {
    /// Pure-Rust tract on the CPU.
    Tract,
    /// onnxruntime with this execution provider.
    Onnxruntime(ort::Provider),
    /// A Triton Inference Server.
    Triton,
}

impl RunsOn {
    /// Whether the work runs on an NVIDIA GPU (CUDA or TensorRT).
    pub fn on_nvidia_gpu(self) -> bool {
        matches!(self, RunsOn::Onnxruntime(p) if p.needs_gpu_package())
    }
}

impl fmt::Display for RunsOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunsOn::Tract => f.write_str("tract"),
            RunsOn::Onnxruntime(p) => write!(f, "onnxruntime {}", p.name()),
            RunsOn::Triton => f.write_str("Triton"),
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
    // nvidia-smi is asked once per start, by whichever step needs it first.
    let devices = std::cell::OnceCell::new();
    let mut started = start_any(kind, bundle, req, provider, &devices, &mut cuda_failed)?;
    if started.runs_on.on_nvidia_gpu() {
        return Ok(started);
    }
    let gpu = matches!(kind, BackendKind::Auto | BackendKind::Ort)
        .then(|| devices.get_or_init(crate::gpus::Devices::probe))
        .filter(|d| d.any());
    match gpu {
        Some(devices) => {
            let why = cuda_failed
                .unwrap_or_else(|| "the CUDA provider was not tried".into())
                .replace('\n', " ");
            let line = format!(
                "this machine has an NVIDIA GPU ({}) but runs on {}: CUDA did not start: {why}",
                devices.name(0),
                started.runs_on
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
            started.runs_on,
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
    devices: &std::cell::OnceCell<crate::gpus::Devices>,
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
            runs_on: RunsOn::Tract,
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
        let gpu_free = |d: i32| {
            p.needs_gpu_package()
                .then(|| devices.get_or_init(crate::gpus::Devices::probe).free_bytes(d))
                .flatten()
        };
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
                    runs_on: RunsOn::Onnxruntime(p),
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

fn fallback_notes(notes: &[String]) -> String {
    if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::GraphKind;

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
}
