//! The restore pipeline: CPEN once per image, the reverse diffusion loop, then the backbone, then
//! crop/clamp (and the inpainting composite). This file is its public face: a pipeline opened from options
//! and one restore entry point per input kind; the stages are in `stages.rs`, the self-ensemble in `tta.rs`.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rayon::prelude::*;

use crate::backend::{self, Engine, Tensor};
use crate::bundle::{Bundle, GraphKind, Task};
use crate::error::{Error, Result};
use crate::image_io::{Carry, Depth, Picture, WriteOptions};
use crate::options::{Noise, RestoreOptions};
use crate::plan::Plan;
use crate::preprocess::{Image, Mask, Quantize};
use crate::start::{StartReport, Started};
use crate::tiling::Tiling;

mod hooks;
mod shared_prior;
mod stages;
mod tta;

pub use hooks::Stages;
pub use shared_prior::PooledFeatures;
pub use tta::{dihedral, undo_dihedral};

/// A loaded model on a started backend.
pub struct Pipeline {
    bundle: Bundle,
    engine: Box<dyn Engine>,
    /// What runs and why, as the start reported it; its plan is the one that runs.
    backend: StartReport,
    /// Runs tiles in parallel when more than one worker is configured.
    pool: Option<rayon::ThreadPool>,
    /// The options it was opened with ([`Pipeline::open`]); otherwise the ones its plan stands for.
    options: RestoreOptions,
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

/// What one restore does differently from the pipeline's options: progress reports, cancellation, its own
/// initial noise or tiling. Default: none of these.
#[derive(Clone, Copy, Default)]
pub struct Control<'a> {
    /// Checked before each stage and between rounds of tiles: once set, the restore stops with
    /// [`Error::Cancelled`].
    pub cancel: Option<&'a AtomicBool>,
    /// Called after each finished tile, on the thread that runs the restore.
    pub progress: Option<&'a (dyn Fn(Progress) + Sync)>,
    /// The prior's initial noise (ipr_dim values) for this restore. Default: None (the options' noise).
    pub noise: Option<&'a [f32]>,
    /// The tiling of this restore. Default: None ([`Pipeline::tiling`]: the plan's tile and the options'
    /// overlap).
    pub tiling: Option<Tiling>,
    /// The prior (IPR, ipr_dim values) every backbone tile of this restore receives, instead of one
    /// computed from the image: CPEN and the diffusion loop do not run (the frames of a shot share one,
    /// from [`Pipeline::shared_prior`]). Default: None.
    pub prior: Option<&'a [f32]>,
}

impl Control<'_> {
    /// Whether the cancel flag is set.
    pub fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// What happens to a restored picture before it is written.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Finish {
    /// Resize the result to this many times the input (Lanczos). Default: None (the model's scale).
    pub outscale: Option<f64>,
    /// Self-ensemble over the 8 flips and rotations. Default: false.
    pub tta: bool,
}

impl Finish {
    /// The largest `outscale`.
    pub const MAX_OUTSCALE: f64 = 16.0;

    /// Whether `x` can be an `outscale`: finite, more than 0 and at most [`Finish::MAX_OUTSCALE`].
    pub fn valid_outscale(x: f64) -> bool {
        x.is_finite() && x > 0.0 && x <= Self::MAX_OUTSCALE
    }
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
    /// the provider is known. The restores then run with the options' noise and the plan's tiling.
    pub fn open(bundle: Bundle, options: &RestoreOptions) -> Result<Pipeline> {
        if let Noise::Values(v) = &options.noise {
            check_noise(v, bundle.ipr_dim())?;
        }
        let req = options.plan_request();
        let started = match options.backend {
            backend::BackendKind::Triton => {
                let Some(triton) = &options.triton else {
                    return Err(Error::Usage(
                        "the triton backend needs RestoreOptions::triton (the server's address)".into(),
                    ));
                };
                crate::start::start_triton(&bundle, triton, &req)?
            }
            kind => crate::start::start(kind, &bundle, &req, &options.provider_options())?,
        };
        Pipeline::from_started(bundle, started, options.clone())
    }

    /// The options this pipeline was opened with.
    pub fn options(&self) -> &RestoreOptions {
        &self.options
    }

    /// The plan this pipeline runs.
    pub fn plan(&self) -> &Plan {
        &self.backend.plan
    }

    /// The tiling restores use unless told otherwise: the plan's tile with the options' overlap.
    pub fn tiling(&self) -> Tiling {
        self.planned_tiling(self.options.tile_overlap)
    }

    /// The bundle it runs.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// What runs (the provider that started, which `auto` may have chosen over the one preferred), and the
    /// start's report in one short line and in full.
    pub fn backend(&self) -> &StartReport {
        &self.backend
    }

    /// How 8-bit outputs are quantised for this model's task.
    pub fn quantize(&self) -> Quantize {
        match self.bundle.task() {
            Task::Inpaint => Quantize::Truncate,
            _ => Quantize::Round,
        }
    }

    /// How results of this pipeline are written: its task's 8-bit quantisation and the options' JPEG quality.
    pub fn write_options(&self, overwrite: bool) -> WriteOptions {
        WriteOptions {
            quantize: self.quantize(),
            jpeg_quality: self.options.jpeg_quality,
            overwrite,
        }
    }

    /// Restore one image with the options' noise and the plan's tiling; `mask` for inpainting.
    ///
    /// The prior is computed once for the whole image (CPEN in windows when the image is larger than one
    /// tile, then one reverse chain); every backbone tile receives that same prior.
    pub fn restore_image(&self, image: &Image, mask: Option<&Mask>) -> Result<Restored> {
        self.restore_image_with(image, mask, &Control::default())
    }

    /// `restore_image` with progress reports, cancellation, and this restore's own noise or tiling.
    pub fn restore_image_with(&self, image: &Image, mask: Option<&Mask>, control: &Control<'_>) -> Result<Restored> {
        let (noise, tiling) = self.settings(control);
        self.run_restore(image, mask, &noise, &tiling, control)
    }

    /// Restore a decoded picture the way the CLI and the server both do: the RGB through the model (the
    /// eight-pass self-ensemble with `Finish::tta`), then resized for `Finish::outscale`, and the alpha channel
    /// resized to the output size.
    pub fn restore_picture(
        &self,
        picture: &Picture,
        mask: Option<&Mask>,
        finish: Finish,
        control: &Control<'_>,
    ) -> Result<RestoredPicture> {
        let (noise, tiling) = self.settings(control);
        let mut restored = if finish.tta {
            self.restore_tta(&picture.rgb, mask, &noise, &tiling, control)?
        } else {
            self.run_restore(&picture.rgb, mask, &noise, &tiling, control)?
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

    /// Restore the image file `input` into `output` as `diffir restore` does: decoded with its alpha, depth,
    /// gray and ICC profile (at most the options' `max_pixels`), restored by [`Pipeline::restore_picture`],
    /// and written atomically in the format `output`'s extension names (never over an existing file unless
    /// `overwrite`). Returns the notes on what decoding and restoring changed or left out.
    pub fn restore_file(
        &self,
        input: &Path,
        output: &Path,
        mask: Option<&Mask>,
        finish: Finish,
        control: &Control<'_>,
        overwrite: bool,
    ) -> Result<Vec<String>> {
        let format = crate::image_io::OutputFormat::from_path(output)?;
        if let Some((h, w)) = crate::image_io::dimensions(input) {
            // The size limit first (the user's own words), then what memory allows.
            crate::image_io::check_pixels(input, h, w, self.options.max_pixels)?;
            self.check_room(input, h, w, finish)?;
        }
        let picture = crate::image_io::read_picture(input, self.options.max_pixels)?;
        format.check_can_hold(output, picture.alpha.is_some())?;
        let done = self.restore_picture(&picture, mask, finish, control)?;
        let carry = done.carry(&picture);
        crate::image_io::write_picture(output, &done.image, &carry, &self.write_options(overwrite))?;
        Ok(picture.notes.iter().chain(&done.restored.notes).cloned().collect())
    }

    /// An error naming the figures where an `h`×`w` input's buffers (decoded, as floats, the result and its
    /// encoding) and the memory budget would not fit in what the process may still allocate: that image is
    /// refused before anything is allocated, and a batch goes on (an allocation that fails aborts).
    pub(crate) fn check_room(&self, input: &Path, h: u64, w: u64, finish: Finish) -> Result<()> {
        let Some(room) = crate::memory::room() else {
            return Ok(());
        };
        let scale = finish.outscale.unwrap_or(0.0).max(self.bundle.scale() as f64);
        let pixels = (h as f64) * (w as f64);
        // Decoded (up to 8 bytes a pixel), its RGBA copy (up to 8) and as floats with alpha (16); the result
        // as floats (12) and its samples for the encoder (up to 6).
        let need = pixels * 32.0 + pixels * scale * scale * 18.0 + self.options.max_memory.unwrap_or(0) as f64;
        if need > room as f64 {
            return Err(Error::TooLarge {
                path: input.into(),
                msg: format!(
                    "{w}x{h} at x{scale} needs about {} for its pixels, and {} can still be allocated",
                    crate::memory::size(need),
                    crate::memory::size(room as f64)
                ),
            });
        }
        Ok(())
    }

    /// The initial noise and the tiling of one restore: the control's where it gives them, else the
    /// options' noise and [`Pipeline::tiling`].
    fn settings(&self, control: &Control<'_>) -> (Vec<f32>, Tiling) {
        let noise = match control.noise {
            Some(v) => v.to_vec(),
            None => self.options.noise.values(self.bundle.ipr_dim()),
        };
        (noise, control.tiling.unwrap_or(self.tiling()))
    }

    /// A pipeline on a started backend; `options` are the ones it was started from.
    fn from_started(bundle: Bundle, started: Started, options: RestoreOptions) -> Result<Pipeline> {
        let Started { engine, report } = started;
        let pool = worker_pool(report.plan.workers)?;
        Ok(Pipeline {
            bundle,
            engine,
            backend: report,
            pool,
            options,
            reduced: std::sync::Mutex::new(None),
        })
    }

    /// The tiling the plan chose, with `overlap`.
    fn planned_tiling(&self, overlap: usize) -> Tiling {
        Tiling {
            tile: self.plan().tile,
            overlap,
        }
    }

    /// Plans the engine keeps per input shape, where it keeps them (tract); for the server's metrics.
    #[cfg(feature = "serve")]
    pub(crate) fn cached_plans(&self) -> Option<usize> {
        self.engine.cached_plans()
    }

    /// How many tiles run at once.
    fn workers(&self) -> usize {
        self.pool.as_ref().map_or(1, |p| p.current_num_threads())
    }

    /// Run `f` over `items` on the worker pool (in parallel) or in sequence; results keep the input order.
    fn map_ordered<T: Sync, R: Send>(&self, items: &[T], f: impl Fn(&T) -> Result<R> + Sync) -> Result<Vec<R>> {
        match &self.pool {
            Some(pool) => pool.install(|| items.par_iter().map(&f).collect()),
            None => items.iter().map(f).collect(),
        }
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

/// A pool of `workers` threads where more than one tile runs at once.
fn worker_pool(workers: usize) -> Result<Option<rayon::ThreadPool>> {
    if workers <= 1 {
        return Ok(None);
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(workers)
        .build()
        .map(Some)
        .map_err(|e| Error::Backend(format!("cannot start {workers} worker threads: {e}")))
}

/// The one check of an initial noise's length against the model's prior.
fn check_noise(noise: &[f32], ipr_dim: usize) -> Result<()> {
    if noise.len() != ipr_dim {
        return Err(Error::Shape(format!(
            "initial noise has {} values; this model's prior has {ipr_dim}",
            noise.len()
        )));
    }
    Ok(())
}

/// The one check of a given prior's length against the model's.
fn check_prior(prior: &[f32], ipr_dim: usize) -> Result<()> {
    if prior.len() != ipr_dim {
        return Err(Error::Shape(format!(
            "the prior has {} values; this model's has {ipr_dim}",
            prior.len()
        )));
    }
    if prior.iter().any(|v| !v.is_finite()) {
        return Err(Error::Shape("the prior has NaN or Inf values".into()));
    }
    Ok(())
}
