//! The execution plan: workers, threads, devices, tile size and tiles per batch, decided once the execution
//! provider is known (a GPU wants one engine per device fed with batches; a CPU one tile per thread).

use std::fmt;

use crate::bundle::{Bundle, GraphKind, Precision};

mod note;

pub use note::{joined, Budget, PlanNote, Words};

/// Tiles per backbone call on the CPU when `--tile-batch` is not given (BENCHMARKS.md, "Batched tiles":
/// batching does not speed up CPU runs, and one tile per worker keeps memory lowest).
pub const CPU_TILE_BATCH: usize = 1;
/// The tile a GPU uses when `--tile auto` cannot learn the device's free memory.
pub const GPU_FALLBACK_TILE: usize = 256;
/// Largest tile `--tile auto` picks on a GPU (input pixels): larger tiles stop paying once the GPU is full,
/// and the backbone's channel attention then sums over more of the image than it was trained on.
pub const GPU_MAX_TILE: usize = 512;
/// Largest batch `--tile auto` picks.
pub const GPU_MAX_TILE_BATCH: usize = 8;
/// Share of a device's free memory `--tile auto` plans to use: the rest is for the weights, the CUDA
/// context and the other sessions of the engine (the fp32 redo, images smaller than one tile).
pub const GPU_MEMORY_SHARE: f64 = 0.7;
/// What a GPU backbone call needs beyond its activations (crate::activations), as a factor on them:
/// cuDNN's convolution workspaces (the fastest algorithms take up to the size of a layer's output) and the
/// CUDA arena's rounding of large blocks to powers of two. Not yet measured on a GPU; scripts/gpu-check.sh
/// prints the peak device memory `--tile auto` reached, to set it from.
pub const GPU_WORKSPACE_MARGIN: f64 = 1.6;

/// Share of the machine's available memory a CPU plan budgets for when `--max-memory` is not given.
pub const CPU_MEMORY_SHARE: f64 = 0.5;
/// Memory one onnxruntime session costs besides its weights (graph, kernels, plans), per graph a worker
/// holds: measured 8 MB for the built-in model and 26 MB for a real-size realsr_x2 (BENCHMARKS.md,
/// "Memory per worker"), modelled as this plus [`CPU_SESSION_WEIGHT_SHARE`] of the graphs' bytes.
pub const CPU_SESSION_BYTES: f64 = 8.0 * 1024.0 * 1024.0;
/// See [`CPU_SESSION_BYTES`].
pub const CPU_SESSION_WEIGHT_SHARE: f64 = 0.2;
/// What one CPU backbone run holds beyond its activations (crate::activations), as a factor on them:
/// glibc's heap keeps the blocks of freed tensors, which later, larger tensors cannot always reuse. A
/// process held 1.45–2.52x the graph's peak (the built-in model, real-size realsr_x2 and deblur_gopro, tiles
/// 64–128; tests/it/activations.rs measures the graph's peak itself with that effect removed), so the
/// per-worker budget covers what a worker was measured to add (tests/it/memory.rs).
pub const CPU_ACTIVATION_MARGIN: f64 = 2.6;

/// The tile size asked for (`--tile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TileRequest {
    /// The provider's choice: the default tile on the CPU; on a GPU the largest tile and batch that fit the
    /// device's free memory.
    #[default]
    Auto,
    /// The whole image in one piece (`--tile 0`).
    Whole,
    /// Tiles of this many input pixels (rounded up to the model's size multiple).
    Pixels(usize),
}

impl std::str::FromStr for TileRequest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" => Ok(TileRequest::Auto),
            "0" => Ok(TileRequest::Whole),
            n => n
                .parse::<usize>()
                .map(TileRequest::Pixels)
                .map_err(|_| format!("'{s}' is not a tile size (auto, 0 for the whole image, or pixels)")),
        }
    }
}

/// What the user asked for; `None` and 0 leave the choice to the plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanRequest {
    /// Threads in all (0 = every core).
    pub threads: usize,
    /// Tiles in flight at once, in all.
    pub workers: Option<usize>,
    /// GPUs (CUDA/TensorRT); empty = device 0.
    pub devices: Vec<i32>,
    /// Tiles per backbone call.
    pub tile_batch: Option<usize>,
    /// The backbone tile asked for.
    pub tile: TileRequest,
    /// The backbone precision asked for.
    pub precision: Precision,
    /// Memory the CPU plan may use in all, in bytes (`--max-memory`); None: [`CPU_MEMORY_SHARE`] of the
    /// memory available when the plan is made. Workers beyond what fits are not started.
    pub max_memory: Option<u64>,
}

/// The plan for one provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// GPU devices, one engine each (empty on the CPU).
    pub devices: Vec<i32>,
    /// Tiles in flight at once, over all devices.
    pub workers: usize,
    /// Threads inside one graph run.
    pub threads: usize,
    /// Backbone tiles per call.
    pub tile_batch: usize,
    /// Backbone tile in input pixels; 0 = whole image.
    pub tile: usize,
    /// The backbone precision.
    pub precision: Precision,
    /// What the plan decided for the user and why, when it did: the tile it chose, threads or workers
    /// clamped to the cores, a re-plan after running out of memory.
    pub notes: Vec<PlanNote>,
}

/// Estimated memory one CPU worker adds at `tile` (input pixels): its sessions (the weights are shared,
/// crate::backend::shared_weights) and one tile's activations (crate::activations, from the graph).
pub fn cpu_worker_bytes(bundle: &Bundle, tile: usize) -> crate::error::Result<f64> {
    let graphs = [GraphKind::Backbone, GraphKind::CpenFeatures];
    let weights: f64 = graphs.iter().map(|&k| bundle.graph(k).bytes.len() as f64).sum();
    let sessions = graphs.len() as f64 * CPU_SESSION_BYTES + CPU_SESSION_WEIGHT_SHARE * weights;
    let per_pixel = crate::activations::bytes_per_pixel(bundle, Precision::Fp32)?;
    Ok(sessions + (tile * tile) as f64 * per_pixel * CPU_ACTIVATION_MARGIN)
}

/// Estimated device memory of one GPU backbone call: the activations of `batch` tiles of `tile` pixels
/// (crate::activations) with [`GPU_WORKSPACE_MARGIN`].
pub fn gpu_call_bytes(per_pixel: f64, tile: usize, batch: usize) -> f64 {
    (tile * tile * batch) as f64 * per_pixel * GPU_WORKSPACE_MARGIN
}

/// Memory a CPU plan needs whatever its worker count: the bundle's graphs as loaded, and one shared copy of
/// their weights.
pub fn cpu_fixed_bytes(bundle: &Bundle) -> f64 {
    2.0 * GraphKind::ALL
        .iter()
        .map(|&k| bundle.graph(k).bytes.len() as f64)
        .sum::<f64>()
}

/// The memory a CPU plan may use in all, and where the figure comes from: `max_memory`, else
/// [`CPU_MEMORY_SHARE`] of what is available; None where neither is known.
pub fn cpu_budget(max_memory: Option<u64>, available: Option<u64>) -> Option<Budget> {
    match (max_memory, available) {
        (Some(m), _) => Some(Budget::MaxMemory(m)),
        (None, Some(a)) => Some(Budget::Available(a)),
        (None, None) => None,
    }
}

impl Plan {
    /// Decide the plan for a provider. `available` is the memory available to the process (None when it
    /// cannot be learnt: the CPU plan is then bounded by `--max-memory` only). `gpu_free_bytes(device)`
    /// reports a device's free memory (None when it cannot be learnt); it is asked only for `--tile auto` on
    /// a GPU.
    pub fn resolve(
        gpu: bool,
        req: &PlanRequest,
        bundle: &Bundle,
        cores: usize,
        available: Option<u64>,
        gpu_free_bytes: impl Fn(i32) -> Option<u64>,
    ) -> Plan {
        let cores = cores.max(1);
        // More threads than cores only oversubscribe them (and, one session per worker, cost memory).
        let clamped = (req.threads > cores).then_some(PlanNote::ThreadsClamped {
            asked: req.threads,
            cores,
        });
        let total_threads = if req.threads == 0 {
            cores
        } else {
            req.threads.min(cores)
        };
        let multiple = bundle.spec.size_multiple;
        let round = |t: usize| crate::tiling::round_up(t.max(1), multiple);
        if !gpu {
            let tile = match req.tile {
                TileRequest::Auto => crate::tiling::DEFAULT_TILE,
                TileRequest::Whole => 0,
                TileRequest::Pixels(n) => n,
            };
            // A whole-image run is one backbone call: give it every thread.
            let asked = req.workers.unwrap_or(if tile == 0 { 1 } else { total_threads });
            let mut workers = asked.clamp(1, total_threads);
            let mut notes: Vec<PlanNote> = match (clamped, asked > workers) {
                (Some(t), _) => vec![t],
                (None, true) => vec![PlanNote::WorkersClamped {
                    asked,
                    threads: total_threads,
                }],
                (None, false) => vec![],
            };
            // Each worker holds a tile's activations and its sessions: as many as the memory budget fits.
            let budget = cpu_budget(req.max_memory, available);
            let per = match (&budget, tile > 0) {
                (Some(_), true) => match cpu_worker_bytes(bundle, round(tile)) {
                    Ok(per) => Some(per),
                    Err(e) => {
                        notes.push(PlanNote::NoBudget(e.to_string()));
                        None
                    }
                },
                _ => None,
            };
            if let (Some(budget), Some(per_worker)) = (budget, per) {
                let fixed = cpu_fixed_bytes(bundle);
                let room = ((budget.bytes() - fixed) / per_worker).floor();
                let fit = room.max(1.0) as usize;
                if room < 1.0 {
                    notes.push(PlanNote::UnderOneWorker {
                        budget,
                        per_worker,
                        fixed,
                    });
                } else if fit < workers {
                    notes.push(PlanNote::BudgetFits {
                        budget,
                        fit,
                        asked: workers,
                        per_worker,
                        fixed,
                    });
                }
                workers = workers.min(fit);
            }
            return Plan {
                devices: vec![],
                workers,
                threads: (total_threads / workers).max(1),
                tile_batch: req.tile_batch.unwrap_or(CPU_TILE_BATCH).max(1),
                // The tile that runs: rounded up to the model's size multiple, as the GPU plan's is.
                tile: if tile == 0 { 0 } else { round(tile) },
                precision: req.precision,
                notes,
            };
        }
        let devices = if req.devices.is_empty() {
            vec![0]
        } else {
            req.devices.clone()
        };
        let workers = req.workers.unwrap_or(1).max(1) * devices.len();
        let threads = if req.threads == 0 {
            1
        } else {
            (req.threads.min(cores) / workers).max(1)
        };
        let (tile, tile_batch, tile_note) = match req.tile {
            TileRequest::Whole => (0, req.tile_batch.unwrap_or(1), None),
            TileRequest::Pixels(n) => (n, req.tile_batch.unwrap_or(1), None),
            TileRequest::Auto => {
                let free = devices.iter().map(|&d| gpu_free_bytes(d)).collect::<Option<Vec<u64>>>();
                match free.and_then(|f| f.into_iter().min()) {
                    None => (
                        GPU_FALLBACK_TILE,
                        req.tile_batch.unwrap_or(1),
                        Some(PlanNote::GpuMemoryUnknown {
                            tile: GPU_FALLBACK_TILE,
                        }),
                    ),
                    Some(free) => match crate::activations::bytes_per_pixel(bundle, req.precision) {
                        Ok(per_pixel) => {
                            let budget = free as f64 * GPU_MEMORY_SHARE / req.workers.unwrap_or(1).max(1) as f64;
                            let (tile, batch) = fit_tile(budget, per_pixel, multiple, req.tile_batch);
                            (
                                tile,
                                batch,
                                Some(PlanNote::GpuTileFits {
                                    tile,
                                    batch,
                                    call_bytes: gpu_call_bytes(per_pixel, tile, batch),
                                    free,
                                    per_pixel,
                                }),
                            )
                        }
                        Err(e) => (
                            GPU_FALLBACK_TILE,
                            req.tile_batch.unwrap_or(1),
                            Some(PlanNote::GpuEstimateFailed {
                                tile: GPU_FALLBACK_TILE,
                                why: e.to_string(),
                            }),
                        ),
                    },
                }
            }
        };
        Plan {
            devices,
            workers,
            threads,
            tile_batch: tile_batch.max(1),
            tile: if tile == 0 { 0 } else { round(tile) },
            precision: req.precision,
            notes: tile_note.into_iter().chain(clamped).collect(),
        }
    }

    /// Workers per device.
    pub fn workers_per_device(&self) -> usize {
        (self.workers / self.devices.len().max(1)).max(1)
    }
}

/// The next smaller (tiles per batch, tile) after running out of memory: half the batch while it holds more
/// than one tile, else half the tile (rounded up to `multiple`); None when one tile of `multiple` pixels
/// is already the least there is. The one rule for the warm-up's re-plan and for the pipeline's retry.
pub fn shrink(batch: usize, tile: usize, multiple: usize) -> Option<(usize, usize)> {
    let multiple = multiple.max(1);
    if batch > 1 {
        Some((batch / 2, tile))
    } else if tile > multiple {
        Some((1, crate::tiling::round_up(tile / 2, multiple)))
    } else {
        None
    }
}

/// The largest tile (a multiple of `multiple`, at most GPU_MAX_TILE) and then the largest batch (at most
/// GPU_MAX_TILE_BATCH, or `batch` when given) whose call ([`gpu_call_bytes`]) fits `budget` bytes.
pub fn fit_tile(budget: f64, per_pixel: f64, multiple: usize, batch: Option<usize>) -> (usize, usize) {
    let fits = |tile: usize, b: usize| gpu_call_bytes(per_pixel, tile, b) <= budget;
    let mut tile = GPU_MAX_TILE / multiple * multiple;
    let want_batch = batch.unwrap_or(1).max(1);
    while tile > multiple && !fits(tile, want_batch) {
        tile -= multiple;
    }
    let batch = match batch {
        Some(b) => b.max(1),
        None => (1..=GPU_MAX_TILE_BATCH).rev().find(|&b| fits(tile, b)).unwrap_or(1),
    };
    (tile, batch)
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let devices = match self.devices.len() {
            0 => String::new(),
            1 => format!("device {}, ", self.devices[0]),
            _ => format!(
                "devices {}, ",
                self.devices.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",")
            ),
        };
        let tile = if self.tile == 0 {
            "whole image".to_string()
        } else {
            format!("tile {}", self.tile)
        };
        write!(
            f,
            "{devices}{} worker(s) x {} thread(s), {tile}, {} tile(s) per batch, {}",
            self.workers, self.threads, self.tile_batch, self.precision
        )
    }
}

/// GPU indices, as `--device` takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList(pub Vec<i32>);

impl std::str::FromStr for DeviceList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_devices(s).map(DeviceList)
    }
}

/// GPU indices from `--device`: a comma-separated list, or `all` (every GPU CUDA shows this process:
/// CUDA_VISIBLE_DEVICES's, else nvidia-smi's, else the driver's; crate::gpus).
pub fn parse_devices(s: &str) -> Result<Vec<i32>, String> {
    if s.trim() == "all" {
        let n = crate::gpus::Devices::probe().count();
        if n == 0 {
            return Err(
                "--device all: no NVIDIA GPU is visible (nvidia-smi lists none, and there is no /dev/nvidia0)".into(),
            );
        }
        return Ok((0..n as i32).collect());
    }
    let mut out = vec![];
    for part in s.split(',') {
        let d = part
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|d| *d >= 0)
            .ok_or_else(|| format!("'{s}' is not a GPU list (e.g. 0 or 0,1 or all)"))?;
        if out.contains(&d) {
            return Err(format!("'{s}' names device {d} twice"));
        }
        out.push(d);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> Bundle {
        Bundle::builtin().unwrap()
    }

    #[test]
    fn cpu_plans_one_tile_per_thread() {
        let req = PlanRequest::default();
        let p = Plan::resolve(false, &req, &bundle(), 8, None, |_| unreachable!());
        assert_eq!((p.workers, p.threads, p.tile_batch, p.tile), (8, 1, 1, 128));
        assert!(p.devices.is_empty());
        let whole = PlanRequest {
            tile: TileRequest::Whole,
            ..Default::default()
        };
        let p = Plan::resolve(false, &whole, &bundle(), 8, None, |_| None);
        assert_eq!((p.workers, p.threads, p.tile), (1, 8, 0));
    }

    /// The defect this module fixes: `auto` on a GPU must not get one session per CPU core.
    #[test]
    fn gpu_plans_one_worker_per_device_whatever_the_core_count() {
        let req = PlanRequest {
            devices: vec![0, 1],
            tile: TileRequest::Pixels(100),
            ..Default::default()
        };
        let p = Plan::resolve(true, &req, &bundle(), 32, None, |_| None);
        assert_eq!((p.workers, p.workers_per_device(), p.threads), (2, 1, 1));
        assert_eq!(p.tile, 104, "rounded up to the size multiple");
        assert_eq!(p.devices, [0, 1]);
    }

    #[test]
    fn absurd_thread_and_worker_counts_are_clamped_to_the_cores() {
        let b = bundle();
        let req = PlanRequest {
            threads: 10_000,
            ..Default::default()
        };
        let p = Plan::resolve(false, &req, &b, 2, None, |_| None);
        assert_eq!((p.workers, p.threads), (2, 1));
        assert_eq!(
            p.notes,
            [PlanNote::ThreadsClamped {
                asked: 10_000,
                cores: 2
            }]
        );
        let req = PlanRequest {
            threads: 16,
            workers: Some(16),
            ..Default::default()
        };
        let p = Plan::resolve(false, &req, &b, 4, None, |_| None);
        assert_eq!(p.workers * p.threads, 4);
        let req = PlanRequest {
            workers: Some(64),
            ..Default::default()
        };
        let p = Plan::resolve(false, &req, &b, 4, None, |_| None);
        assert_eq!(p.workers, 4);
        assert_eq!(p.notes, [PlanNote::WorkersClamped { asked: 64, threads: 4 }]);
        // Within the cores nothing is said.
        let p = Plan::resolve(false, &PlanRequest::default(), &b, 4, None, |_| None);
        assert_eq!((p.workers, p.threads, p.notes), (4, 1, vec![]));
        // GPU plans clamp the threads too.
        let req = PlanRequest {
            threads: 1000,
            ..Default::default()
        };
        let p = Plan::resolve(true, &req, &b, 8, None, |_| Some(80 << 30));
        assert!(p.threads <= 8);
        assert!(
            p.notes.contains(&PlanNote::ThreadsClamped { asked: 1000, cores: 8 }),
            "{:?}",
            p.notes
        );
    }

    #[test]
    fn cpu_workers_fit_the_memory_budget() {
        let b = bundle();
        let per = cpu_worker_bytes(&b, 128).unwrap();
        let fixed = cpu_fixed_bytes(&b);
        // Room for exactly three workers: three of eight start, with the threads of the others.
        let req = PlanRequest {
            max_memory: Some((fixed + 3.0 * per + 1.0) as u64),
            ..Default::default()
        };
        let p = Plan::resolve(false, &req, &b, 8, None, |_| None);
        assert_eq!((p.workers, p.threads), (3, 2));
        assert!(
            matches!(
                p.notes[..],
                [PlanNote::BudgetFits {
                    budget: Budget::MaxMemory(_),
                    fit: 3,
                    asked: 8,
                    ..
                }]
            ),
            "{:?}",
            p.notes
        );
        // Without --max-memory, half of what is available.
        let avail = (2.0 * (fixed + 2.0 * per + 1.0)) as u64;
        let p = Plan::resolve(false, &PlanRequest::default(), &b, 8, Some(avail), |_| None);
        assert_eq!(p.workers, 2);
        assert!(
            matches!(p.notes[..], [PlanNote::BudgetFits { budget: Budget::Available(a), .. }] if a == avail),
            "{:?}",
            p.notes
        );
        assert!(p.notes[0].to_string().starts_with("50% of the"));
        // Too little for even one: one worker, said.
        let req = PlanRequest {
            max_memory: Some(1 << 20),
            ..Default::default()
        };
        let p = Plan::resolve(false, &req, &b, 8, None, |_| None);
        assert_eq!((p.workers, p.threads), (1, 8));
        assert!(
            matches!(p.notes[..], [PlanNote::UnderOneWorker { .. }]),
            "{:?}",
            p.notes
        );
        // Plenty, or unknown: one worker per core, nothing said.
        let p = Plan::resolve(false, &PlanRequest::default(), &b, 8, Some(1 << 40), |_| None);
        assert_eq!((p.workers, p.notes), (8, vec![]));
        // The estimate grows with the tile's area.
        assert!(cpu_worker_bytes(&b, 256).unwrap() > 3.0 * per - 2.0 * per);
    }

    #[test]
    fn tile_auto_fits_free_memory() {
        let b = bundle();
        let per_pixel = crate::activations::bytes_per_pixel(&b, Precision::Fp32).unwrap();
        let req = PlanRequest::default();
        // Plenty of memory: the largest tile and batch.
        let p = Plan::resolve(true, &req, &b, 4, None, |_| Some(80 << 30));
        assert_eq!((p.tile, p.tile_batch), (GPU_MAX_TILE, GPU_MAX_TILE_BATCH));
        // Room for exactly two 256² tiles in the planned share.
        let free = (gpu_call_bytes(per_pixel, 256, 2) / GPU_MEMORY_SHARE).ceil() as u64;
        let p = Plan::resolve(true, &req, &b, 4, None, |_| Some(free));
        assert_eq!((p.tile, p.tile_batch), (256 + 104, 1));
        let (tile, batch) = fit_tile(gpu_call_bytes(per_pixel, 256, 2), per_pixel, 8, Some(2));
        assert_eq!((tile, batch), (256, 2));
        // Unknown memory: the fallback tile, said in the note.
        let p = Plan::resolve(true, &req, &b, 4, None, |_| None);
        assert_eq!(p.tile, GPU_FALLBACK_TILE);
        assert_eq!(
            p.notes,
            [PlanNote::GpuMemoryUnknown {
                tile: GPU_FALLBACK_TILE
            }]
        );
        // The smallest device decides.
        let two = PlanRequest {
            devices: vec![0, 1],
            ..Default::default()
        };
        let p = Plan::resolve(true, &two, &b, 4, None, |d| Some(if d == 1 { free } else { 80 << 30 }));
        assert_eq!(p.tile, 256 + 104);
    }

    #[test]
    fn device_lists_parse() {
        assert_eq!(parse_devices("0").unwrap(), [0]);
        assert_eq!(parse_devices("1, 0,3").unwrap(), [1, 0, 3]);
        assert!(parse_devices("0,0").unwrap_err().contains("twice"));
        assert!(parse_devices("x").is_err());
        assert!(parse_devices("-1").is_err());
    }

    #[test]
    fn tile_requests_parse() {
        assert_eq!("auto".parse::<TileRequest>().unwrap(), TileRequest::Auto);
        assert_eq!("0".parse::<TileRequest>().unwrap(), TileRequest::Whole);
        assert_eq!("192".parse::<TileRequest>().unwrap(), TileRequest::Pixels(192));
        assert!("big".parse::<TileRequest>().is_err());
    }
}
