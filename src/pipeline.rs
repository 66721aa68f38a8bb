//! The restore pipeline: CPEN once per image, the reverse diffusion loop, then the backbone, then
//! crop/clamp (and the inpainting composite).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::backend::{self, BackendKind, Engine, EngineOptions, Input, Tensor};
use crate::bundle::{Bundle, GraphKind, Precision, Task};
use crate::error::{Error, Result};
use crate::image_io::{Carry, Depth, Picture};
use crate::plan::{Plan, PlanRequest};
use crate::preprocess::{self, Image, Mask, Quantize};
use crate::sampler;
use crate::tiling::{self, Blender, TilePlan};

/// Default backbone tile, in input (LR) pixels.
pub const DEFAULT_TILE: usize = 128;
/// Default overlap between backbone tiles, in input pixels.
pub const DEFAULT_TILE_OVERLAP: usize = 16;

/// How an image is split for the backbone (and CPEN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    /// Tile size in input pixels, rounded up to the model's size multiple; 0 = the whole image at once.
    /// CPEN is evaluated in windows of this core size plus its halo (exact either way).
    pub tile: usize,
    /// Overlap between neighbouring backbone tiles (input pixels), feathered with raised-cosine weights.
    pub overlap: usize,
}

impl Default for Tiling {
    fn default() -> Self {
        Tiling {
            tile: DEFAULT_TILE,
            overlap: DEFAULT_TILE_OVERLAP,
        }
    }
}

impl Tiling {
    /// The whole image in one piece.
    pub const WHOLE: Tiling = Tiling { tile: 0, overlap: 0 };

    /// The backbone's input shape for images larger than one tile (for fixed-shape engines).
    pub fn tile_shape(&self, multiple: usize) -> Option<(usize, usize)> {
        (self.tile > 0).then(|| {
            let t = self.tile.div_ceil(multiple) * multiple;
            (t, t)
        })
    }
}

/// A loaded model on a started backend.
pub struct Pipeline {
    bundle: Bundle,
    engine: Box<dyn Engine>,
    backend_line: String,
    backend_summary: String,
    /// What runs, in a few words ("onnxruntime CUDA", "tract"): the provider that started, not the one asked.
    runs_on: String,
    plan: Plan,
    /// Runs tiles in parallel when more than one worker is configured.
    pool: Option<rayon::ThreadPool>,
    /// The options it was opened with ([`Pipeline::open`]); defaults otherwise.
    options: crate::options::RestoreOptions,
    /// (tiles per batch, tile) after running out of memory: later restores start from there instead of
    /// the plan, so one out-of-memory error is not met again by every image.
    reduced: std::sync::Mutex<Option<(usize, usize)>>,
}

/// Where the time of one restore went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Padding and building the network input.
    pub prepare: Duration,
    /// CPEN (whole image, or all windows plus the head).
    pub cpen: Duration,
    /// The reverse diffusion loop (T denoiser runs).
    pub diffusion: Duration,
    /// Backbone runs (wall time; tiles may run in parallel).
    pub backbone: Duration,
    /// Cropping tiles out, blending them, clamping and compositing.
    pub assemble: Duration,
}

impl std::ops::AddAssign for Timings {
    fn add_assign(&mut self, o: Timings) {
        self.prepare += o.prepare;
        self.cpen += o.cpen;
        self.diffusion += o.diffusion;
        self.backbone += o.backbone;
        self.assemble += o.assemble;
    }
}

impl Timings {
    /// The sum of the stages.
    pub fn total(&self) -> Duration {
        self.prepare + self.cpen + self.diffusion + self.backbone + self.assemble
    }
}

/// Where a restore is: backbone tiles finished out of the total (an image run whole counts as one tile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Tiles finished so far.
    pub tiles_done: usize,
    /// Tiles in all (after an out-of-memory retry with smaller tiles the count starts again).
    pub tiles_total: usize,
}

/// Progress reports and cancellation for one restore. Default: neither.
#[derive(Clone, Copy, Default)]
pub struct Control<'a> {
    /// Checked before each stage and between rounds of tiles: once set, the restore stops with
    /// [`Error::Cancelled`].
    pub cancel: Option<&'a AtomicBool>,
    /// Called after each finished tile, on the thread that runs the restore.
    pub progress: Option<&'a (dyn Fn(Progress) + Sync)>,
}

/// What happens to a restored picture before it is written.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Finish {
    /// Resize the result to this many times the input (Lanczos). Default: None (the model's scale).
    pub outscale: Option<f64>,
    /// Self-ensemble over the 8 flips and rotations (`restore_tta`). Default: false.
    pub tta: bool,
}

/// A restored picture, ready to encode: the image and its alpha channel at the output size.
#[derive(Debug, Clone)]
pub struct RestoredPicture {
    /// The result at the output size (the model's scale, or `Finish::outscale`).
    pub image: Image,
    /// The input's alpha, resized to the output size (Catmull-Rom).
    pub alpha: Option<Vec<f32>>,
    /// The restore itself (its image moved into `image`).
    pub restored: Restored,
}

impl RestoredPicture {
    /// What the output carries over from `picture`: alpha, bit depth, grayscale, ICC profile.
    pub fn carry<'a>(&'a self, picture: &'a Picture) -> Carry<'a> {
        Carry {
            alpha: self.alpha.as_deref(),
            sixteen_bit: picture.depth == Depth::Sixteen,
            gray: picture.gray,
            icc: picture.icc.as_deref(),
        }
    }
}

/// The result of one restore, with the prior that produced it.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The restored image, H·s × W·s × 3 in [0, 1].
    pub image: Image,
    /// CPEN's condition c (ipr_dim values); empty where a remote engine ran the whole prior.
    pub condition: Vec<f32>,
    /// x after each reverse step, t = T−1 … 0; the last one is the IPR (the only one where a remote
    /// engine ran the whole prior).
    pub steps: Vec<Vec<f32>>,
    /// Backbone runs (1 for a whole-image restore).
    pub tiles: usize,
    /// CPEN runs (1 for a whole-image CPEN).
    pub cpen_windows: usize,
    /// Backbone runs whose reduced-precision output had NaN/Inf and were redone in fp32.
    pub fp32_redos: usize,
    /// What the pipeline changed to finish (smaller batches or tiles after running out of memory).
    pub notes: Vec<String>,
    /// Where the time went.
    pub timings: Timings,
}

impl Restored {
    /// The prior (IPR) every backbone call received.
    pub fn ipr(&self) -> &[f32] {
        self.steps.last().map(|v| v.as_slice()).unwrap_or(&[])
    }
}

impl Pipeline {
    /// Open `bundle` with `options`: start the backend they name (Triton included) with a plan decided once
    /// the provider is known. [`Pipeline::restore_image`] then runs with the options' noise and tiling.
    pub fn open(bundle: Bundle, options: &crate::options::RestoreOptions) -> Result<Pipeline> {
        let req = options.plan_request();
        let mut p = match options.backend {
            BackendKind::Triton => {
                let Some(triton) = &options.triton else {
                    return Err(Error::Backend(
                        "the triton backend needs RestoreOptions::triton (the server's address)".into(),
                    ));
                };
                Pipeline::start_triton(bundle, triton, &req)?
            }
            kind => Pipeline::start(bundle, kind, &req, &options.provider_options())?,
        };
        let d = p.bundle.ipr_dim();
        if let crate::options::Noise::Values(v) = &options.noise {
            if v.len() != d {
                return Err(Error::Shape(format!(
                    "initial noise has {} values; this model's prior has {d}",
                    v.len()
                )));
            }
        }
        p.options = options.clone();
        Ok(p)
    }

    /// The options this pipeline was opened with.
    pub fn options(&self) -> &crate::options::RestoreOptions {
        &self.options
    }

    /// How results of this pipeline are written: its task's 8-bit quantisation and the options' JPEG quality.
    pub fn write_options(&self, overwrite: bool) -> crate::image_io::WriteOptions {
        crate::image_io::WriteOptions {
            quantize: self.quantize(),
            jpeg_quality: self.options.jpeg_quality,
            overwrite,
        }
    }

    /// The initial noise of the options, as values.
    pub fn noise(&self) -> Vec<f32> {
        self.options.noise.values(self.bundle.ipr_dim())
    }

    /// The tiling of the plan with the options' overlap.
    pub fn tiling(&self) -> Tiling {
        self.planned_tiling(self.options.tile_overlap)
    }

    /// Restore one image with the options' noise and tiling; `mask` for inpainting.
    pub fn restore_image(&self, image: &Image, mask: Option<&Mask>) -> Result<Restored> {
        self.restore_with(image, mask, &self.noise(), &self.tiling(), &Control::default())
    }

    /// `restore_image` with progress reports and cancellation.
    pub fn restore_image_with(&self, image: &Image, mask: Option<&Mask>, control: &Control<'_>) -> Result<Restored> {
        self.restore_with(image, mask, &self.noise(), &self.tiling(), control)
    }

    /// Start `kind` for `bundle` with a plan (workers, threads, devices, tile, batch) decided once the
    /// provider is known. `planned_tiling` gives the tiling the plan chose (`--tile auto`).
    pub fn start(
        bundle: Bundle,
        kind: BackendKind,
        req: &PlanRequest,
        provider: &backend::ProviderOptions,
    ) -> Result<Pipeline> {
        let started = backend::start(kind, &bundle, req, provider)?;
        Pipeline::from_started(bundle, started)
    }

    /// Run `bundle` on a Triton Inference Server holding a `diffir triton-repo` repository: the prior there
    /// once per image, the backbone tiles there in batches, `req.workers` requests in flight (default 4).
    /// A missing model or one whose inputs do not match the bundle is an error here, before any image.
    pub fn start_triton(bundle: Bundle, opts: &crate::triton::TritonOptions, req: &PlanRequest) -> Result<Pipeline> {
        let started = crate::triton::start(&bundle, opts, req)?;
        Pipeline::from_started(bundle, started)
    }

    /// A pipeline on a started backend, with its plan and its backend lines.
    fn from_started(bundle: Bundle, started: backend::Started) -> Result<Pipeline> {
        let runs_on = started.runs_on.to_string();
        let mut p = Pipeline::with_plan(bundle, started.engine, started.line, started.plan)?;
        p.backend_summary = started.summary;
        p.runs_on = runs_on;
        Ok(p)
    }

    /// Start `kind` for `bundle` with exactly these engine options (`workers` tiles at once, one per call).
    pub fn new(bundle: Bundle, kind: BackendKind, opts: &EngineOptions) -> Result<Pipeline> {
        let (engine, line) = backend::select(kind, &bundle, opts)?;
        Pipeline::with_engine(bundle, engine, format!("backend: {line}"), opts.workers)
    }

    /// A pipeline on an engine built by the caller; `workers` > 1 runs that many tiles at once.
    pub fn with_engine(
        bundle: Bundle,
        engine: Box<dyn Engine>,
        backend_line: String,
        workers: usize,
    ) -> Result<Pipeline> {
        let plan = Plan {
            devices: vec![],
            workers: workers.max(1),
            threads: 1,
            tile_batch: 1,
            tile: DEFAULT_TILE,
            precision: Precision::Fp32,
            note: None,
        };
        Pipeline::with_plan(bundle, engine, backend_line, plan)
    }

    /// A pipeline on an engine built by the caller, run as `plan` says (workers, tiles per batch).
    pub fn with_plan(bundle: Bundle, engine: Box<dyn Engine>, backend_line: String, plan: Plan) -> Result<Pipeline> {
        let workers = plan.workers;
        let pool = if workers > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(workers)
                .build()
                .map_err(|e| Error::Backend(format!("cannot start {workers} worker threads: {e}")))?;
            Some(pool)
        } else {
            None
        };
        let runs_on = engine.describe();
        Ok(Pipeline {
            bundle,
            engine,
            runs_on,
            backend_summary: backend_line.clone(),
            backend_line,
            plan,
            pool,
            options: Default::default(),
            reduced: std::sync::Mutex::new(None),
        })
    }

    /// The plan this pipeline runs.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The tiling the plan chose, with `overlap`.
    pub fn planned_tiling(&self, overlap: usize) -> Tiling {
        Tiling {
            tile: self.plan.tile,
            overlap,
        }
    }

    /// Run `f` over `items` on the worker pool (in parallel) or in sequence; results keep the input order.
    fn map_ordered<T: Sync, R: Send>(&self, items: &[T], f: impl Fn(&T) -> Result<R> + Sync) -> Result<Vec<R>> {
        match &self.pool {
            Some(pool) => pool.install(|| items.par_iter().map(&f).collect()),
            None => items.iter().map(f).collect(),
        }
    }

    /// How many tiles run at once.
    pub fn workers(&self) -> usize {
        self.pool.as_ref().map_or(1, |p| p.current_num_threads())
    }

    /// The bundle it runs.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// Which backend runs, with its plan, the library's path and every provider skipped and why.
    pub fn backend_line(&self) -> &str {
        &self.backend_line
    }

    /// Plans the engine keeps per input shape, where it keeps them (tract); for the server's metrics.
    pub(crate) fn cached_plans(&self) -> Option<usize> {
        self.engine.cached_plans()
    }

    /// One short line: the backend, its plan, and in a few words why.
    pub fn backend_summary(&self) -> &str {
        &self.backend_summary
    }

    /// What runs, in a few words ("onnxruntime CUDA", "onnxruntime CPU", "tract", "Triton"): the provider
    /// that started, which `auto` may have chosen over the one preferred.
    pub fn runs_on(&self) -> &str {
        &self.runs_on
    }

    /// How 8-bit outputs are quantised for this model's task.
    pub fn quantize(&self) -> Quantize {
        match self.bundle.task() {
            Task::Inpaint => Quantize::Truncate,
            _ => Quantize::Round,
        }
    }

    /// CPEN on a padded NCHW network input: the condition c.
    pub fn condition(&self, x: &[f32], shape: &[usize; 4]) -> Result<Vec<f32>> {
        let out = self.engine.run(GraphKind::Cpen, &[Input::F32(shape, x)])?;
        self.expect_vector(GraphKind::Cpen, &out)?;
        Ok(out.data)
    }

    /// The reverse chain from `noise`, conditioned on c; returns x after each step.
    pub fn sample(&self, condition: &[f32], noise: &[f32]) -> Result<Vec<Vec<f32>>> {
        let d = self.bundle.ipr_dim();
        if noise.len() != d {
            return Err(Error::Shape(format!(
                "initial noise has {} values; this model's prior has {d}",
                noise.len()
            )));
        }
        let shape = [1, d];
        sampler::reverse_chain(&self.bundle.schedule, noise, |x, t| {
            let out = self.engine.run(
                GraphKind::Denoiser,
                &[
                    Input::F32(&shape, x),
                    Input::I64(&[1], &[t]),
                    Input::F32(&shape, condition),
                ],
            )?;
            self.expect_vector(GraphKind::Denoiser, &out)?;
            Ok(out.data)
        })
    }

    /// The backbone on a padded NCHW batch with one prior per batch item (`ipr` holds batch × ipr_dim
    /// values). A reduced-precision output with NaN or Inf is redone in fp32 where the backend can (the flag
    /// says so); elsewhere it is an error.
    pub fn backbone(&self, x: &[f32], shape: &[usize; 4], ipr: &[f32]) -> Result<(Tensor, bool)> {
        self.backbone_until(x, shape, ipr, None)
    }

    /// `backbone`, stopped inside the run once `cancel` is set where the engine can (onnxruntime).
    fn backbone_until(
        &self,
        x: &[f32],
        shape: &[usize; 4],
        ipr: &[f32],
        cancel: Option<&AtomicBool>,
    ) -> Result<(Tensor, bool)> {
        let s = self.bundle.scale();
        let n = shape[0];
        let ipr_shape = [n, ipr.len() / n.max(1)];
        let inputs = [Input::F32(shape, x), Input::F32(&ipr_shape, ipr)];
        let mut out = match cancel {
            Some(cancel) => self.engine.run_until(GraphKind::Backbone, &inputs, cancel)?,
            None => self.engine.run(GraphKind::Backbone, &inputs)?,
        };
        let mut redone = false;
        if out.data.iter().any(|v| !v.is_finite()) {
            match self.engine.run_fp32(GraphKind::Backbone, &inputs) {
                Some(r) => {
                    out = r?;
                    redone = true;
                }
                None => {
                    return Err(Error::graph(
                        GraphKind::Backbone,
                        format!("output has NaN or Inf for input {}", backend::shape_str(shape)),
                    ))
                }
            }
        }
        let want = [n, 3, shape[2] * s, shape[3] * s];
        if out.shape != want {
            return Err(Error::graph(
                GraphKind::Backbone,
                format!(
                    "output shape {} for input {} (expected {})",
                    backend::shape_str(&out.shape),
                    backend::shape_str(shape),
                    backend::shape_str(&want)
                ),
            ));
        }
        Ok((out, redone))
    }

    /// CPEN's condition for a padded NCHW input, evaluated in windows of `core` input pixels plus CPEN's
    /// halo: the per-window feature sums over the core regions give the exact global average pool.
    /// Returns the condition and the number of windows.
    pub fn condition_tiled(&self, x: &[f32], shape: &[usize; 4], core: usize) -> Result<(Vec<f32>, usize)> {
        let spec = &self.bundle.spec;
        let unit = spec.cpen_unshuffle();
        let core = core.div_ceil(unit).max(1) * unit;
        let (hp, wp) = (shape[2], shape[3]);
        let (win_h, ys) = tiling::halo_windows(hp, core, spec.cpen_halo);
        let (win_w, xs) = tiling::halo_windows(wp, core, spec.cpen_halo);
        let windows: Vec<_> = ys.iter().flat_map(|y| xs.iter().map(move |x| (*y, *x))).collect();
        let d = self.bundle.ipr_dim();
        let (fh, fw) = (win_h / unit, win_w / unit);
        let sums = self.map_ordered(&windows, |(wy, wx)| {
            let (tile, tshape) = crop_nchw(x, shape, wy.start, wx.start, win_h, win_w);
            let f = self
                .engine
                .run(GraphKind::CpenFeatures, &[Input::F32(&tshape, &tile)])?;
            if f.shape != [1, d, fh, fw] {
                return Err(Error::graph(
                    GraphKind::CpenFeatures,
                    format!(
                        "output shape {} (expected 1x{d}x{fh}x{fw})",
                        backend::shape_str(&f.shape)
                    ),
                ));
            }
            let (y0, y1) = ((wy.core_start - wy.start) / unit, (wy.core_end - wy.start) / unit);
            let (x0, x1) = ((wx.core_start - wx.start) / unit, (wx.core_end - wx.start) / unit);
            let mut sum = vec![0.0f64; d];
            for (c, s) in sum.iter_mut().enumerate() {
                let plane = &f.data[c * fh * fw..(c + 1) * fh * fw];
                for row in plane[y0 * fw..y1 * fw].chunks_exact(fw) {
                    *s += row[x0..x1].iter().map(|&v| v as f64).sum::<f64>();
                }
            }
            Ok(sum)
        })?;
        let count = ((hp / unit) * (wp / unit)) as f64;
        let pooled: Vec<f32> = (0..d)
            .map(|c| (sums.iter().map(|s| s[c]).sum::<f64>() / count) as f32)
            .collect();
        let out = self.engine.run(GraphKind::CpenHead, &[Input::F32(&[1, d], &pooled)])?;
        self.expect_vector(GraphKind::CpenHead, &out)?;
        Ok((out.data, windows.len()))
    }

    /// Restore one image with the given initial noise (1 × ipr_dim). Inpainting needs `mask`.
    ///
    /// The prior is computed once for the whole image (CPEN in windows when the image is larger than one
    /// tile, then one reverse chain); every backbone tile receives that same prior.
    pub fn restore(&self, image: &Image, mask: Option<&Mask>, noise: &[f32], tiling: &Tiling) -> Result<Restored> {
        self.restore_cancellable(image, mask, noise, tiling, &AtomicBool::new(false))
    }

    /// `restore`, stopping with `Error::Cancelled` once `cancel` is set (checked before each stage and
    /// between rounds of backbone tiles).
    pub fn restore_cancellable(
        &self,
        image: &Image,
        mask: Option<&Mask>,
        noise: &[f32],
        tiling: &Tiling,
        cancel: &AtomicBool,
    ) -> Result<Restored> {
        let control = Control {
            cancel: Some(cancel),
            progress: None,
        };
        self.restore_with(image, mask, noise, tiling, &control)
    }

    /// `restore` with progress reports (one per finished backbone tile) and cancellation (`control`).
    pub fn restore_with(
        &self,
        image: &Image,
        mask: Option<&Mask>,
        noise: &[f32],
        tiling: &Tiling,
        control: &Control<'_>,
    ) -> Result<Restored> {
        let never = AtomicBool::new(false);
        let cancel = control.cancel.unwrap_or(&never);
        let check = || {
            if cancel.load(Ordering::Relaxed) {
                Err(Error::Cancelled)
            } else {
                Ok(())
            }
        };
        self.check_inputs(image, mask)?;
        check()?;
        let (tiling, mut batch) = self.after_reductions(tiling);
        let tiling = &tiling;
        let spec = &self.bundle.spec;
        let mut timings = Timings::default();
        let mut watch = Stopwatch(Instant::now());
        let mut lap = |slot: &mut Duration| watch.lap(slot);
        let (x, shape) = preprocess::network_input(image, mask, spec.size_multiple, spec.padding);
        lap(&mut timings.prepare);
        let (hp, wp) = (shape[2], shape[3]);
        let whole = match tiling.tile_shape(spec.size_multiple) {
            None => true,
            Some((th, tw)) => hp <= th && wp <= tw,
        };
        let d = self.bundle.ipr_dim();
        if noise.len() != d {
            return Err(Error::Shape(format!(
                "initial noise has {} values; this model's prior has {d}",
                noise.len()
            )));
        }
        // A remote engine runs CPEN and the whole reverse chain as one graph: only the IPR comes back.
        let (condition, steps, cpen_windows) = if let Some(ipr) = self.engine.prior(&x, &shape, noise) {
            let ipr = ipr?;
            lap(&mut timings.cpen);
            (vec![], vec![ipr], 1)
        } else {
            let (condition, cpen_windows) = if whole {
                (self.condition(&x, &shape)?, 1)
            } else {
                self.condition_tiled(&x, &shape, tiling.tile)?
            };
            lap(&mut timings.cpen);
            check()?;
            let steps = self.sample(&condition, noise)?;
            lap(&mut timings.diffusion);
            (condition, steps, cpen_windows)
        };
        let ipr = steps.last().expect("at least one step").clone();
        let s = self.bundle.scale();
        let (oh, ow) = (image.height * s, image.width * s);
        let composite = mask.map(|m| (image, m));
        let multiple = spec.size_multiple;
        // Out of memory: halve the batch, then the tile, and go again (the prior stays the same); fixed-shape
        // engines rebuild their sessions at the smaller shape, and later restores start from it.
        let mut tiling = if whole { Tiling::WHOLE } else { *tiling };
        let mut notes = vec![];
        let (image_out, tiles, fp32_redos) = loop {
            let attempt = if tiling.tile_shape(multiple).is_none_or(|(th, tw)| hp <= th && wp <= tw) {
                self.backbone_until(&x, &shape, &ipr, control.cancel)
                    .map(|(out, redone)| {
                        lap(&mut timings.backbone);
                        if let Some(report) = control.progress {
                            report(Progress {
                                tiles_done: 1,
                                tiles_total: 1,
                            });
                        }
                        let img = preprocess::finish(&out.data, &out.shape, oh, ow, composite);
                        (img, 1, redone as usize)
                    })
            } else {
                let mut tiled = Timings::default();
                let r = self.backbone_tiled(&x, &shape, &ipr, tiling, batch, (oh, ow), &mut tiled, cancel, control);
                // The tiled stage timed itself (backbone and blending): count it once.
                lap(&mut Duration::default());
                timings += tiled;
                r.map(|(mut img, tiles, redos)| {
                    preprocess::finish_in_place(&mut img, composite);
                    (img, tiles, redos)
                })
            };
            match attempt {
                Ok(done) => break done,
                Err(Error::OutOfMemory { msg, .. }) => {
                    let tile = if tiling.tile == 0 { hp.max(wp) } else { tiling.tile };
                    let Some((smaller_batch, smaller_tile)) = crate::plan::shrink(batch, tile, multiple) else {
                        return Err(Error::OutOfMemory {
                            graph: GraphKind::Backbone,
                            msg: format!("{msg} (even one tile of {tile} pixels does not fit)"),
                        });
                    };
                    let change = if smaller_batch < batch {
                        batch = smaller_batch;
                        format!("{batch} tile(s) per batch")
                    } else {
                        tiling.tile = smaller_tile;
                        tiling.overlap = tiling.overlap.min(tiling.tile / 2);
                        format!("tile {}", tiling.tile)
                    };
                    notes.push(format!("out of memory ({msg}); retrying with {change}"));
                    self.engine.resize(batch, tiling.tile_shape(multiple))?;
                    *self.reduced.lock().unwrap_or_else(|e| e.into_inner()) = Some((batch, tiling.tile));
                    lap(&mut timings.backbone);
                }
                Err(e) => return Err(e),
            }
        };
        notes.extend(self.engine.take_notes());
        lap(&mut timings.assemble);
        Ok(Restored {
            image: image_out,
            condition,
            steps,
            tiles,
            cpen_windows,
            fp32_redos,
            notes,
            timings,
        })
    }

    /// `tiling` and the plan's tiles per batch, lowered to what an earlier out-of-memory retry settled on.
    fn after_reductions(&self, tiling: &Tiling) -> (Tiling, usize) {
        let mut tiling = *tiling;
        let mut batch = self.plan.tile_batch.max(1);
        if let Some((reduced_batch, reduced_tile)) = *self.reduced.lock().unwrap_or_else(|e| e.into_inner()) {
            batch = batch.min(reduced_batch);
            if reduced_tile > 0 && (tiling.tile == 0 || reduced_tile < tiling.tile) {
                tiling.tile = reduced_tile;
                tiling.overlap = tiling.overlap.min(reduced_tile / 2);
            }
        }
        (tiling, batch)
    }

    /// The backbone over fixed-shape tiles, `batch` tiles per call and the pool's workers at once, blended
    /// into an `out` (H·s × W·s) image. Returns the image, the tile count and the fp32 redos.
    #[allow(clippy::too_many_arguments)]
    fn backbone_tiled(
        &self,
        x: &[f32],
        shape: &[usize; 4],
        ipr: &[f32],
        tiling: Tiling,
        batch: usize,
        out: (usize, usize),
        timings: &mut Timings,
        cancel: &AtomicBool,
        control: &Control<'_>,
    ) -> Result<(Image, usize, usize)> {
        let spec = &self.bundle.spec;
        let (hp, wp) = (shape[2], shape[3]);
        let (oh, ow) = out;
        let s = self.bundle.scale();
        let plan = TilePlan::new(hp, wp, tiling.tile, tiling.overlap, spec.size_multiple).map_err(Error::Shape)?;
        let mut data = vec![0.0f32; oh * ow * 3];
        let mut fp32_redos = 0;
        // Fixed-batch engines get every call padded to their batch (repeating the last tile).
        let padded = self.engine.fixed_batch(GraphKind::Backbone).unwrap_or(0);
        let tile_values = 3 * plan.tile_h * s * plan.tile_w * s;
        {
            let mut blender = Blender::new(&mut data, oh, ow, &plan, (hp, wp), s);
            let tiles: Vec<_> = plan.tiles().collect();
            let mut done = 0;
            let groups: Vec<&[(usize, usize, usize, usize)]> = tiles.chunks(batch.max(1)).collect();
            for round in groups.chunks(self.workers()) {
                if cancel.load(Ordering::Relaxed) {
                    return Err(Error::Cancelled);
                }
                let clock = Instant::now();
                let outs = self.map_ordered(round, |group| {
                    let n = group.len().max(padded);
                    let c = shape[1];
                    let mut xb = Vec::with_capacity(n * c * plan.tile_h * plan.tile_w);
                    for k in 0..n {
                        let &(_, _, y, x0) = &group[k.min(group.len() - 1)];
                        xb.extend(crop_nchw(x, shape, y, x0, plan.tile_h, plan.tile_w).0);
                    }
                    let iprs = ipr.repeat(n);
                    self.backbone(&xb, &[n, c, plan.tile_h, plan.tile_w], &iprs)
                })?;
                let mid = Instant::now();
                timings.backbone += mid - clock;
                for (group, (out, redone)) in round.iter().zip(outs) {
                    fp32_redos += redone as usize;
                    for (k, &(i, j, _, _)) in group.iter().enumerate() {
                        blender.add(i, j, &out.data[k * tile_values..(k + 1) * tile_values]);
                        done += 1;
                        if let Some(report) = control.progress {
                            report(Progress {
                                tiles_done: done,
                                tiles_total: tiles.len(),
                            });
                        }
                    }
                }
                timings.assemble += mid.elapsed();
            }
        }
        Ok((Image::from_raw(oh, ow, data), plan.count(), fp32_redos))
    }

    /// Restore a decoded picture the way the CLI and the server both do: the RGB through the model
    /// (`restore`, or `restore_tta`), then resized for `Finish::outscale`, and the alpha channel resized to
    /// the output size.
    pub fn restore_picture(
        &self,
        picture: &Picture,
        mask: Option<&Mask>,
        noise: &[f32],
        tiling: &Tiling,
        finish: Finish,
        control: &Control<'_>,
    ) -> Result<RestoredPicture> {
        let mut restored = if finish.tta {
            self.restore_tta(&picture.rgb, mask, noise, tiling, control)?
        } else {
            self.restore_with(&picture.rgb, mask, noise, tiling, control)?
        };
        let (ih, iw) = (picture.rgb.height, picture.rgb.width);
        let (oh, ow) = match finish.outscale {
            Some(x) => (
                ((ih as f64 * x).round() as usize).max(1),
                ((iw as f64 * x).round() as usize).max(1),
            ),
            None => (restored.image.height, restored.image.width),
        };
        let full = std::mem::replace(&mut restored.image, Image::zeros(0, 0));
        let image = if (oh, ow) == (full.height, full.width) {
            full
        } else {
            crate::image_io::resize_image(&full, oh, ow)
        };
        let alpha = picture
            .alpha
            .as_ref()
            .map(|a| crate::image_io::resize_alpha(a, ih, iw, oh, ow));
        Ok(RestoredPicture { image, alpha, restored })
    }

    /// Self-ensemble (test-time augmentation): restore the 8 flips and rotations of the image, undo each on
    /// its result and average them. 8x the time of `restore`; the returned prior and timings are those of
    /// the untransformed pass, the timings summed over all eight.
    pub fn restore_tta(
        &self,
        image: &Image,
        mask: Option<&Mask>,
        noise: &[f32],
        tiling: &Tiling,
        control: &Control<'_>,
    ) -> Result<Restored> {
        let mut first: Option<Restored> = None;
        let mut sum: Vec<f64> = vec![];
        for k in 0..8 {
            let (data, h, w) = dihedral(&image.data, image.height, image.width, 3, k);
            let t_mask = mask.map(|m| {
                let (d, mh, mw) = dihedral(&m.data, m.height, m.width, 1, k);
                Mask {
                    height: mh,
                    width: mw,
                    data: d,
                }
            });
            // Progress counts the tiles of all eight passes.
            let pass = |p: Progress| {
                if let Some(report) = control.progress {
                    report(Progress {
                        tiles_done: k * p.tiles_total + p.tiles_done,
                        tiles_total: 8 * p.tiles_total,
                    });
                }
            };
            let pass_control = Control {
                cancel: control.cancel,
                progress: Some(&pass),
            };
            let r = self.restore_with(
                &Image::from_raw(h, w, data),
                t_mask.as_ref(),
                noise,
                tiling,
                &pass_control,
            )?;
            let (back, _, _) = undo_dihedral(&r.image.data, r.image.height, r.image.width, 3, k);
            if sum.is_empty() {
                sum = vec![0.0; back.len()];
            }
            for (a, b) in sum.iter_mut().zip(&back) {
                *a += *b as f64;
            }
            match &mut first {
                None => first = Some(r),
                Some(f) => {
                    f.timings += r.timings;
                    f.tiles += r.tiles;
                    f.fp32_redos += r.fp32_redos;
                    f.notes.extend(r.notes);
                }
            }
        }
        let mut out = first.expect("eight passes");
        out.image.data = sum.into_iter().map(|v| (v / 8.0) as f32).collect();
        Ok(out)
    }

    fn check_inputs(&self, image: &Image, mask: Option<&Mask>) -> Result<()> {
        if image.height == 0 || image.width == 0 {
            return Err(Error::Shape("the image is empty".into()));
        }
        self.bundle.task().check_mask(mask.is_some()).map_err(Error::Mask)?;
        match mask {
            Some(m) if (m.height, m.width) != (image.height, image.width) => Err(Error::Shape(format!(
                "mask is {}x{} but the image is {}x{}",
                m.width, m.height, image.width, image.height
            ))),
            _ => Ok(()),
        }
    }

    fn expect_vector(&self, graph: GraphKind, t: &Tensor) -> Result<()> {
        let want = [1, self.bundle.ipr_dim()];
        if t.shape != want {
            return Err(Error::graph(
                graph,
                format!(
                    "output shape {} (expected {})",
                    backend::shape_str(&t.shape),
                    backend::shape_str(&want)
                ),
            ));
        }
        Ok(())
    }
}

/// The k-th (0..8) element of the dihedral group on an H×W×C interleaved image: a horizontal flip when
/// k ≥ 4, then k mod 4 quarter turns clockwise. Returns the data and its new height and width.
pub fn dihedral(data: &[f32], h: usize, w: usize, c: usize, k: usize) -> (Vec<f32>, usize, usize) {
    let mut cur = data.to_vec();
    let (mut ch, mut cw) = (h, w);
    if k >= 4 {
        cur = flip_h(&cur, ch, cw, c);
    }
    for _ in 0..k % 4 {
        cur = rot90(&cur, ch, cw, c);
        std::mem::swap(&mut ch, &mut cw);
    }
    (cur, ch, cw)
}

/// The inverse of `dihedral(.., k)`.
pub fn undo_dihedral(data: &[f32], h: usize, w: usize, c: usize, k: usize) -> (Vec<f32>, usize, usize) {
    let mut cur = data.to_vec();
    let (mut ch, mut cw) = (h, w);
    for _ in 0..(4 - k % 4) % 4 {
        cur = rot90(&cur, ch, cw, c);
        std::mem::swap(&mut ch, &mut cw);
    }
    if k >= 4 {
        cur = flip_h(&cur, ch, cw, c);
    }
    (cur, ch, cw)
}

fn flip_h(d: &[f32], h: usize, w: usize, c: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(d.len());
    for y in 0..h {
        for x in (0..w).rev() {
            out.extend_from_slice(&d[(y * w + x) * c..(y * w + x + 1) * c]);
        }
    }
    out
}

/// A quarter turn clockwise: the result is w × h; its pixel (y, x) is the source's (h − 1 − x, y).
fn rot90(d: &[f32], h: usize, w: usize, c: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(d.len());
    for y in 0..w {
        for x in 0..h {
            let (sy, sx) = (h - 1 - x, y);
            out.extend_from_slice(&d[(sy * w + sx) * c..(sy * w + sx + 1) * c]);
        }
    }
    out
}

/// Splits wall time into stages: each lap adds the time since the previous one to a stage.
struct Stopwatch(Instant);

impl Stopwatch {
    fn lap(&mut self, slot: &mut Duration) {
        let now = Instant::now();
        *slot += now - self.0;
        self.0 = now;
    }
}

/// A window of a batch-1 NCHW tensor.
fn crop_nchw(x: &[f32], shape: &[usize; 4], y: usize, x0: usize, h: usize, w: usize) -> (Vec<f32>, [usize; 4]) {
    let (c, hp, wp) = (shape[1], shape[2], shape[3]);
    let mut out = Vec::with_capacity(c * h * w);
    for ch in 0..c {
        let plane = &x[ch * hp * wp..(ch + 1) * hp * wp];
        for row in y..y + h {
            out.extend_from_slice(&plane[row * wp + x0..row * wp + x0 + w]);
        }
    }
    (out, [1, c, h, w])
}

#[cfg(test)]
mod dihedral_tests {
    use super::*;

    #[test]
    fn the_eight_transforms_are_distinct_and_undone() {
        let (h, w, c) = (3, 5, 2);
        let d: Vec<f32> = (0..h * w * c).map(|v| v as f32).collect();
        let mut seen = vec![];
        for k in 0..8 {
            let (t, th, tw) = dihedral(&d, h, w, c, k);
            assert_eq!((th, tw), if k % 2 == 1 { (w, h) } else { (h, w) });
            let (back, bh, bw) = undo_dihedral(&t, th, tw, c, k);
            assert_eq!((bh, bw, &back), (h, w, &d), "k = {k}");
            assert!(!seen.contains(&t), "k = {k} repeats an earlier transform");
            seen.push(t);
        }
        // a quarter turn clockwise moves the top-left pixel to the top-right
        let (t, _, tw) = dihedral(&d, h, w, c, 1);
        assert_eq!(&t[(tw - 1) * c..tw * c], &d[..c]);
    }
}
