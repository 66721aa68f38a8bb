//! Starting a backend (above the engines: it chooses between them): the provider chosen (and each one skipped, and why), the plan decided for it,
//! re-planned smaller where the start runs out of memory, and a warning where this machine has a GPU that
//! the work does not run on.

use crate::backend::{multi, ort, plugin, tract, BackendKind, Engine, EngineOptions, ProviderOptions};
use crate::bundle::{Bundle, Precision};
use crate::error::{Error, Result};
use crate::plan::{Plan, PlanNote, PlanRequest};

mod report;

#[cfg(feature = "triton")]
use crate::triton::TritonEngine;
use crate::triton::TritonOptions;
pub use report::{RunsOn, StartReport};

/// A started backend: the engine, the plan it runs, and what was chosen and why.
pub struct Started {
    /// The engine (one per device behind a dispatcher where there are several).
    pub engine: Box<dyn Engine>,
    /// What runs, and why.
    pub report: StartReport,
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
    if started.report.runs_on.on_nvidia_gpu() {
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
                started.report.runs_on
            );
            if provider.require_gpu {
                return Err(Error::Backend(format!("--require-gpu: {line}")));
            }
            started.report.warnings.push(format!("warning: {line}"));
            Ok(started)
        }
        None if provider.require_gpu => Err(Error::Backend(format!(
            "--require-gpu: runs on {}, not on an NVIDIA GPU{}",
            started.report.runs_on,
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
    let available = crate::memory::available_memory();
    // `fallback`: why tract runs where it was not asked for by name (None: it was).
    let tract = |fallback: Option<String>| -> Result<Started> {
        if req.precision != Precision::Fp32 {
            return Err(Error::Usage(format!(
                "tract runs float32 only: --precision {} needs an onnxruntime backend ({})",
                req.precision,
                report::why_tract(&fallback)
            )));
        }
        let plan = Plan::resolve(false, req, bundle, cores, available, |_| None);
        let engine = tract::TractEngine::new(bundle, &engine_options(&plan, 0, bundle, provider))?;
        let report = StartReport {
            fallback,
            ..StartReport::new(RunsOn::Tract, engine.describe(), plan)
        };
        Ok(Started {
            engine: Box::new(engine),
            report,
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
        return tract(None);
    };
    let gpu_only = providers.iter().all(|p| p.needs_gpu_package());
    if let Err(e) = ort::load(gpu_only) {
        *cuda_failed = Some(format!("{e}; for the GPU, {}", ort::GPU_INSTALL_HINT));
        return match kind {
            BackendKind::Auto => tract(Some(format!("onnxruntime unavailable: {e}"))),
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
                    let opts = engine_options(plan, device, bundle, provider);
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
                let (version, warning) = ort::library_version().unwrap_or_default();
                let skipped = if notes.is_empty() {
                    vec![]
                } else {
                    providers[..providers.iter().position(|&q| q == p).unwrap_or(0)]
                        .iter()
                        .map(|q| q.name())
                        .collect()
                };
                let report = StartReport {
                    version: Some(version),
                    skipped,
                    skipped_why: std::mem::take(&mut notes),
                    warnings: warning.into_iter().collect(),
                    ..StartReport::new(RunsOn::Onnxruntime(p), engine.describe(), plan)
                };
                return Ok(Started { engine, report });
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
        return tract(Some(format!("onnxruntime unavailable: {}", notes.join("; "))));
    }
    Err(Error::Backend(format!(
        "onnxruntime could not start: {}",
        notes.join("; ")
    )))
}

/// Start with `plan`; where the start (a GPU engine's warm-up on the planned batch of tiles) runs out of
/// memory, re-plan with half the batch, then half the tile ([`crate::plan::shrink`]), until it fits.
/// Returns what started and the plan it runs, whose notes say what was re-planned.
pub fn start_fitting<E>(
    mut plan: Plan,
    multiple: usize,
    mut start: impl FnMut(&Plan) -> Result<E>,
) -> Result<(E, Plan)> {
    let mut notes = vec![];
    loop {
        match start(&plan) {
            Ok(started) => {
                plan.notes.append(&mut notes);
                return Ok((started, plan));
            }
            Err(Error::OutOfMemory { graph, msg }) if plan.tile > 0 => {
                let Some((batch, tile)) = crate::plan::shrink(plan.tile_batch, plan.tile, multiple) else {
                    return Err(Error::OutOfMemory {
                        graph,
                        msg: format!("{msg} (even one tile of {} pixels does not fit)", plan.tile),
                    });
                };
                notes.push(PlanNote::Replanned {
                    batch: plan.tile_batch,
                    tile: plan.tile,
                    to_batch: batch,
                    to_tile: tile,
                });
                plan.tile_batch = batch;
                plan.tile = tile;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Connect to the server in `opts` for `bundle` and decide the plan: requests in flight (`workers`,
/// default 4), tiles per request (default 4, at most the backbone's max_batch_size) and the tile (`auto`:
/// the one the repository was made for).
#[cfg(feature = "triton")]
pub fn start_triton(bundle: &Bundle, opts: &TritonOptions, req: &PlanRequest) -> Result<Started> {
    use crate::plan::TileRequest;
    if req.precision != Precision::Fp32 {
        return Err(Error::Usage(format!(
            "--precision {} does not apply to the triton backend: the server's models decide the precision \
             (diffir triton-repo --tensorrt)",
            req.precision
        )));
    }
    let engine = TritonEngine::connect(bundle, opts)?;
    let remote = engine.remote().clone();
    let batch = req.tile_batch.unwrap_or(crate::triton::DEFAULT_TILE_BATCH);
    if batch > remote.max_batch && req.tile_batch.is_some() {
        let (_, backbone) = engine.models();
        return Err(Error::Usage(format!(
            "--tile-batch {batch} is over the Triton model '{backbone}' max_batch_size {}",
            remote.max_batch
        )));
    }
    let (tile, note) = match req.tile {
        TileRequest::Whole => (0, None),
        TileRequest::Pixels(n) => (n, None),
        TileRequest::Auto => match remote.tile {
            Some(t) => (t, Some(PlanNote::RepositoryTile)),
            None => (crate::tiling::DEFAULT_TILE, None),
        },
    };
    let plan = Plan {
        devices: vec![],
        workers: req.workers.unwrap_or(crate::triton::DEFAULT_IN_FLIGHT).max(1),
        threads: 1,
        tile_batch: batch.min(remote.max_batch).max(1),
        tile,
        precision: Precision::Fp32,
        notes: note.into_iter().collect(),
    };
    let report = StartReport::new(RunsOn::Triton, Engine::describe(&engine), plan);
    Ok(Started {
        engine: Box::new(engine),
        report,
    })
}

/// A build without the gRPC client (the `triton` feature) cannot reach a Triton server.
#[cfg(not(feature = "triton"))]
pub fn start_triton(_bundle: &Bundle, opts: &TritonOptions, _req: &PlanRequest) -> Result<Started> {
    Err(Error::Backend(format!(
        "the triton backend ({}) is not in this build: build diffir with the `triton` feature",
        opts.url
    )))
}

/// The options of the engine for `device` under `plan`.
fn engine_options(plan: &Plan, device: i32, bundle: &Bundle, provider: &ProviderOptions) -> EngineOptions {
    EngineOptions {
        threads: plan.threads,
        device,
        workers: plan.workers_per_device(),
        precision: plan.precision,
        tile_shape: crate::tiling::Tiling {
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
            notes: vec![],
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
        let replans = plan
            .notes
            .iter()
            .filter(|n| matches!(n, PlanNote::Replanned { .. }))
            .count();
        assert_eq!(replans, tries.get() - 1, "{:?}", plan.notes);
        assert!(
            plan.notes[0].to_string().contains("8 tile(s) of 512"),
            "{:?}",
            plan.notes
        );
        // What fits at once is not re-planned.
        let tries = std::cell::Cell::new(0);
        let (_, plan) = start_fitting(gpu_plan(256, 2), 8, fake_start(1 << 20, &tries)).unwrap();
        assert_eq!(
            (plan.tile_batch, plan.tile, plan.notes, tries.get()),
            (2, 256, vec![], 1)
        );
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
