//! The pipeline's inner doors, for the crate's own tests, benches and studies (reached through the hidden
//! `internal` module; not a stable API): pipelines on an engine the caller built or with exact engine
//! options, each stage on its own, and restores with an explicit noise and tiling.

use std::sync::atomic::AtomicBool;

use super::{Control, Pipeline, Restored};
use crate::backend::{self, BackendKind, Engine, EngineOptions, ProviderOptions, Tensor};
use crate::bundle::{Bundle, Precision};
use crate::error::Result;
use crate::options::RestoreOptions;
use crate::plan::{Plan, PlanRequest, TileRequest};
use crate::preprocess::{Image, Mask};
use crate::start::{RunsOn, StartReport, Started};
use crate::tiling::{Tiling, DEFAULT_TILE};
use crate::triton::TritonOptions;

/// See the module docs. Bring it into scope (`use diffir::internal::pipeline::Stages`) to call these on a
/// [`Pipeline`].
pub trait Stages: Sized {
    /// Start `kind` with a plan decided once the provider is known ([`Pipeline::open`] without the
    /// options struct).
    fn start(bundle: Bundle, kind: BackendKind, req: &PlanRequest, provider: &ProviderOptions) -> Result<Self>;
    /// The prior and the backbone on a Triton server.
    fn start_triton(bundle: Bundle, opts: &TritonOptions, req: &PlanRequest) -> Result<Self>;
    /// Start `kind` with exactly these engine options (`workers` tiles at once, one per call).
    fn new(bundle: Bundle, kind: BackendKind, opts: &EngineOptions) -> Result<Self>;
    /// A pipeline on an engine the caller built; `workers` > 1 runs that many tiles at once.
    fn with_engine(bundle: Bundle, engine: Box<dyn Engine>, line: String, workers: usize) -> Result<Self>;
    /// A pipeline on an engine the caller built, run as `plan` says.
    fn with_plan(bundle: Bundle, engine: Box<dyn Engine>, line: String, plan: Plan) -> Result<Self>;
    /// The plan's tile with `overlap`.
    fn planned_tiling(&self, overlap: usize) -> Tiling;
    /// CPEN on a padded NCHW network input: the condition c.
    fn condition(&self, x: &[f32], shape: &[usize; 4]) -> Result<Vec<f32>>;
    /// CPEN in windows of `core` pixels plus its halo; the condition and the number of windows.
    fn condition_tiled(&self, x: &[f32], shape: &[usize; 4], core: usize) -> Result<(Vec<f32>, usize)>;
    /// The reverse chain from `noise`, conditioned on c; x after each step.
    fn sample(&self, condition: &[f32], noise: &[f32]) -> Result<Vec<Vec<f32>>>;
    /// The backbone on a padded NCHW batch (one prior per item); whether it was redone in fp32.
    fn backbone(&self, x: &[f32], shape: &[usize; 4], ipr: &[f32]) -> Result<(Tensor, bool)>;
    /// One restore with this noise and tiling.
    fn restore(&self, image: &Image, mask: Option<&Mask>, noise: &[f32], tiling: &Tiling) -> Result<Restored>;
    /// `restore`, stopped once `cancel` is set.
    fn restore_cancellable(
        &self,
        image: &Image,
        mask: Option<&Mask>,
        noise: &[f32],
        tiling: &Tiling,
        cancel: &AtomicBool,
    ) -> Result<Restored>;
}

impl Stages for Pipeline {
    fn start(bundle: Bundle, kind: BackendKind, req: &PlanRequest, provider: &ProviderOptions) -> Result<Self> {
        Pipeline::open(bundle, &RestoreOptions::from_request(kind, req, provider))
    }

    fn start_triton(bundle: Bundle, opts: &TritonOptions, req: &PlanRequest) -> Result<Self> {
        let options = RestoreOptions {
            triton: Some(opts.clone()),
            ..RestoreOptions::from_request(BackendKind::Triton, req, &ProviderOptions::default())
        };
        Pipeline::open(bundle, &options)
    }

    fn new(bundle: Bundle, kind: BackendKind, opts: &EngineOptions) -> Result<Self> {
        let (engine, line) = backend::select(kind, &bundle, opts)?;
        Pipeline::with_engine(bundle, engine, format!("backend: {line}"), opts.workers)
    }

    fn with_engine(bundle: Bundle, engine: Box<dyn Engine>, line: String, workers: usize) -> Result<Self> {
        let plan = Plan {
            devices: vec![],
            workers: workers.max(1),
            threads: 1,
            tile_batch: 1,
            tile: DEFAULT_TILE,
            precision: Precision::Fp32,
            notes: vec![],
        };
        Pipeline::with_plan(bundle, engine, line, plan)
    }

    fn with_plan(bundle: Bundle, engine: Box<dyn Engine>, line: String, plan: Plan) -> Result<Self> {
        // The options say what the plan does, so that `options()` never contradicts what runs.
        let options = RestoreOptions {
            devices: plan.devices.clone(),
            threads: plan.threads,
            workers: Some(plan.workers),
            precision: plan.precision,
            tile: match plan.tile {
                0 => TileRequest::Whole,
                t => TileRequest::Pixels(t),
            },
            tile_batch: Some(plan.tile_batch),
            ..RestoreOptions::default()
        };
        let report = StartReport::new(RunsOn::Custom, line, plan);
        Pipeline::from_started(bundle, Started { engine, report }, options)
    }

    fn planned_tiling(&self, overlap: usize) -> Tiling {
        Pipeline::planned_tiling(self, overlap)
    }

    fn condition(&self, x: &[f32], shape: &[usize; 4]) -> Result<Vec<f32>> {
        Pipeline::condition(self, x, shape)
    }

    fn condition_tiled(&self, x: &[f32], shape: &[usize; 4], core: usize) -> Result<(Vec<f32>, usize)> {
        Pipeline::condition_tiled(self, x, shape, core)
    }

    fn sample(&self, condition: &[f32], noise: &[f32]) -> Result<Vec<Vec<f32>>> {
        Pipeline::sample(self, condition, noise)
    }

    fn backbone(&self, x: &[f32], shape: &[usize; 4], ipr: &[f32]) -> Result<(Tensor, bool)> {
        Pipeline::backbone(self, x, shape, ipr)
    }

    fn restore(&self, image: &Image, mask: Option<&Mask>, noise: &[f32], tiling: &Tiling) -> Result<Restored> {
        self.run_restore(image, mask, noise, tiling, &Control::default())
    }

    fn restore_cancellable(
        &self,
        image: &Image,
        mask: Option<&Mask>,
        noise: &[f32],
        tiling: &Tiling,
        cancel: &AtomicBool,
    ) -> Result<Restored> {
        let control = Control {
            cancel: Some(cancel),
            ..Control::default()
        };
        self.run_restore(image, mask, noise, tiling, &control)
    }
}
