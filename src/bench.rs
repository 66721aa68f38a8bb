//! `diffir bench`: time whole restores of a synthetic image, per stage, without file I/O.

use std::time::Duration;

use crate::bundle::Task;
use crate::error::Result;
use crate::pipeline::{Control, Pipeline, Timings};
use crate::preprocess::{Image, Mask};
use crate::sampler;
use crate::tiling::Tiling;

/// Timings of every measured run (the warm-up excluded).
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The timings of each timed run.
    pub runs: Vec<Timings>,
    /// Backbone tiles per run.
    pub tiles: usize,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    if v.is_empty() {
        Duration::ZERO
    } else {
        v[v.len() / 2]
    }
}

impl BenchReport {
    /// The median of the runs' totals.
    pub fn median_total(&self) -> Duration {
        median(self.runs.iter().map(|t| t.total()).collect())
    }

    /// Median of each stage: (name, duration).
    pub fn median_stages(&self) -> Vec<(&'static str, Duration)> {
        let stage = |f: fn(&Timings) -> Duration| median(self.runs.iter().map(f).collect());
        vec![
            ("prepare", stage(|t| t.prepare)),
            ("cpen", stage(|t| t.cpen)),
            ("diffusion loop", stage(|t| t.diffusion)),
            ("backbone", stage(|t| t.backbone)),
            ("tiling/blending", stage(|t| t.assemble)),
        ]
    }
}

/// A deterministic textured test image (smooth gradients and fine stripes).
pub fn synthetic_image(height: usize, width: usize) -> Image {
    let mut data = Vec::with_capacity(height * width * 3);
    for y in 0..height {
        for x in 0..width {
            let (fy, fx) = (y as f32 / height.max(1) as f32, x as f32 / width.max(1) as f32);
            let stripes = ((x as f32 * 0.7).sin() * (y as f32 * 0.3).cos()) * 0.15;
            data.extend([
                (0.2 + 0.6 * fx + stripes).clamp(0.0, 1.0),
                (0.3 + 0.4 * fy - stripes).clamp(0.0, 1.0),
                (0.5 + 0.3 * (fx - fy) + stripes * 0.5).clamp(0.0, 1.0),
            ]);
        }
    }
    Image::from_raw(height, width, data)
}

/// Warm up once, then time `runs` restores of a synthetic `height × width` image.
pub fn bench(pipeline: &Pipeline, height: usize, width: usize, runs: usize, tiling: &Tiling) -> Result<BenchReport> {
    let image = synthetic_image(height, width);
    let mask = (pipeline.bundle().task() == Task::Inpaint).then(|| Mask {
        height,
        width,
        data: (0..height * width)
            .map(|i| if (i / width) % 7 < 2 { 1.0 } else { 0.0 })
            .collect(),
    });
    let noise = sampler::seeded_noise(0, pipeline.bundle().ipr_dim());
    let control = Control {
        noise: Some(&noise),
        tiling: Some(*tiling),
        ..Control::default()
    };
    let warm = pipeline.restore_image_with(&image, mask.as_ref(), &control)?;
    let mut report = BenchReport {
        runs: vec![],
        tiles: warm.tiles,
    };
    for _ in 0..runs.max(1) {
        report
            .runs
            .push(pipeline.restore_image_with(&image, mask.as_ref(), &control)?.timings);
    }
    Ok(report)
}

/// tract's optimised backbone plan for `bundle` on one synthetic `h`×`w` input, timed per operator type with
/// `threads` threads: the mean of `runs` runs after one warm-up, slowest first.
pub fn tract_op_profile(
    bundle: &crate::bundle::Bundle,
    (h, w): (usize, usize),
    threads: usize,
    runs: usize,
) -> Result<Vec<crate::backend::tract::OpTime>> {
    use crate::backend::tract::TractEngine;
    use crate::backend::{EngineOptions, Input};
    let engine = TractEngine::new(
        bundle,
        &EngineOptions {
            threads,
            workers: 1,
            ..Default::default()
        },
    )?;
    let (c, d) = (bundle.spec.input_channels, bundle.ipr_dim());
    // Timing does not depend on the values: the synthetic image's RGB planes, other channels zero.
    let rgb = synthetic_image(h, w);
    let image: Vec<f32> = (0..c)
        .flat_map(|ch| (0..h * w).map(move |px| (ch, px)))
        .map(|(ch, px)| if ch < 3 { rgb.data[px * 3 + ch] } else { 0.0 })
        .collect();
    let ipr = sampler::seeded_noise(0, d);
    let inputs = [Input::F32(&[1, c, h, w], &image), Input::F32(&[1, d], &ipr)];
    engine.op_profile(crate::bundle::GraphKind::Backbone, &inputs, runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_stage_times() {
        let t = |ms: u64| Timings {
            backbone: Duration::from_millis(ms),
            ..Default::default()
        };
        let r = BenchReport {
            runs: vec![t(30), t(10), t(20)],
            tiles: 1,
        };
        assert_eq!(r.median_total(), Duration::from_millis(20));
        assert_eq!(r.median_stages()[3], ("backbone", Duration::from_millis(20)));
    }

    #[test]
    fn synthetic_image_is_in_range() {
        let img = synthetic_image(17, 23);
        assert_eq!(img.data.len(), 17 * 23 * 3);
        assert!(img.data.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}
