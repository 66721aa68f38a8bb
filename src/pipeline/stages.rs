//! The stages of one restore: CPEN (whole, or in exact windows), the reverse diffusion loop, the backbone
//! (whole, or tile by tile and blended), and the retry with smaller batches and tiles after running out of
//! memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{check_noise, check_prior, Control, Pipeline, PooledFeatures, Progress, Restored, Timings};
use crate::backend::{self, Input, Tensor};
use crate::bundle::GraphKind;
use crate::error::{Error, Result};
use crate::preprocess::{self, Image, Mask};
use crate::sampler;
use crate::tiling::{self, Blender, TilePlan, Tiling};

impl Pipeline {
    /// CPEN on a padded NCHW network input: the condition c.
    pub(super) fn condition(&self, x: &[f32], shape: &[usize; 4]) -> Result<Vec<f32>> {
        let out = self.engine.run(GraphKind::Cpen, &[Input::F32(shape, x)])?;
        self.expect_vector(GraphKind::Cpen, &out)?;
        Ok(out.data)
    }

    /// The reverse chain from `noise`, conditioned on c; returns x after each step.
    pub(super) fn sample(&self, condition: &[f32], noise: &[f32]) -> Result<Vec<Vec<f32>>> {
        let d = self.bundle.ipr_dim();
        check_noise(noise, d)?;
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
    pub(super) fn backbone(&self, x: &[f32], shape: &[usize; 4], ipr: &[f32]) -> Result<(Tensor, bool)> {
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
    pub(super) fn condition_tiled(&self, x: &[f32], shape: &[usize; 4], core: usize) -> Result<(Vec<f32>, usize)> {
        let (pooled, windows) = self.feature_sums(x, shape, core)?;
        Ok((self.head(&pooled.mean())?, windows))
    }

    /// CPEN's head on pooled features (ipr_dim values): the condition c.
    pub(super) fn head(&self, pooled: &[f32]) -> Result<Vec<f32>> {
        let d = self.bundle.ipr_dim();
        let out = self.engine.run(GraphKind::CpenHead, &[Input::F32(&[1, d], pooled)])?;
        self.expect_vector(GraphKind::CpenHead, &out)?;
        Ok(out.data)
    }

    /// CPEN's features of a padded NCHW input summed over every position, in windows of `core` input pixels
    /// plus CPEN's halo (each window's core region counted once), with the number of windows.
    pub(super) fn feature_sums(&self, x: &[f32], shape: &[usize; 4], core: usize) -> Result<(PooledFeatures, usize)> {
        let spec = &self.bundle.spec;
        let unit = spec.cpen_unshuffle();
        let core = tiling::round_up(core.max(1), unit);
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
        let pooled = PooledFeatures {
            sums: (0..d).map(|c| sums.iter().map(|s| s[c]).sum::<f64>()).collect(),
            positions: ((hp / unit) * (wp / unit)) as u64,
        };
        Ok((pooled, windows.len()))
    }

    /// One restore with this noise and tiling: progress reports (one per finished backbone tile) and
    /// cancellation from `control` (its noise and tiling are the caller's to apply).
    pub(super) fn run_restore(
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
        check_noise(noise, self.bundle.ipr_dim())?;
        // A prior given by the caller (shared by a shot's frames) replaces CPEN and the reverse chain; a
        // remote engine runs CPEN and the whole reverse chain as one graph: only the IPR comes back.
        let (condition, steps, cpen_windows) = if let Some(prior) = control.prior {
            check_prior(prior, self.bundle.ipr_dim())?;
            (vec![], vec![prior.to_vec()], 0)
        } else if let Some(ipr) = self.engine.prior(&x, &shape, noise) {
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
                let r = self.backbone_tiled((x.as_slice(), &shape), &ipr, tiling, batch, (oh, ow), control);
                // The tiled stage timed itself (backbone and blending): count it once.
                lap(&mut Duration::default());
                r.map(|(mut img, tiles, redos, tiled)| {
                    timings += tiled;
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
        let mut batch = self.plan().tile_batch.max(1);
        if let Some((reduced_batch, reduced_tile)) = *self.reduced.lock().unwrap_or_else(|e| e.into_inner()) {
            batch = batch.min(reduced_batch);
            if reduced_tile > 0 && (tiling.tile == 0 || reduced_tile < tiling.tile) {
                tiling.tile = reduced_tile;
                tiling.overlap = tiling.overlap.min(reduced_tile / 2);
            }
        }
        (tiling, batch)
    }

    /// The backbone over fixed-shape tiles of the padded NCHW `input`, `batch` tiles per call and the
    /// pool's workers at once, blended into an `out` (H·s × W·s) image. Returns the image, the tile count,
    /// the fp32 redos and the time spent running and blending.
    fn backbone_tiled(
        &self,
        input: (&[f32], &[usize; 4]),
        ipr: &[f32],
        tiling: Tiling,
        batch: usize,
        out: (usize, usize),
        control: &Control<'_>,
    ) -> Result<(Image, usize, usize, Timings)> {
        let (x, shape) = input;
        let never = AtomicBool::new(false);
        let cancel = control.cancel.unwrap_or(&never);
        let mut timings = Timings::default();
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
        Ok((Image::from_raw(oh, ow, data), plan.count(), fp32_redos, timings))
    }
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
