//! One prior for many images (the frames of a video shot): CPEN's features pooled over all of them, then
//! CPEN's head and the diffusion loop once. The pooling is the exact windowed global average that tiled
//! restores use, summed over the images instead of over one image's windows.

use super::Pipeline;
use crate::error::{Error, Result};
use crate::preprocess::{self, Image, Mask};

/// CPEN's features summed over every position of one or more images (before the global average pool).
/// Frames of one size weigh the same; images of different sizes weigh by their area.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PooledFeatures {
    /// The sum of each of the ipr_dim feature channels over every position.
    pub sums: Vec<f64>,
    /// How many feature positions were summed.
    pub positions: u64,
}

impl PooledFeatures {
    /// Add another image's (or shot's) features.
    pub fn add(&mut self, other: &PooledFeatures) {
        if self.sums.is_empty() {
            self.sums = vec![0.0; other.sums.len()];
        }
        for (a, b) in self.sums.iter_mut().zip(&other.sums) {
            *a += b;
        }
        self.positions += other.positions;
    }

    /// The global average pool: each channel's mean over the positions.
    pub fn mean(&self) -> Vec<f32> {
        let n = self.positions.max(1) as f64;
        self.sums.iter().map(|s| (s / n) as f32).collect()
    }
}

impl Pipeline {
    /// CPEN's features of `image` (with `mask` for inpainting), summed over its positions: windows of the
    /// pipeline's tile with CPEN's halo, as a tiled restore pools them (one window where the tile is 0 or
    /// the image fits one). [`Pipeline::shared_prior`] turns the sum over several images into one prior.
    pub fn pooled_features(&self, image: &Image, mask: Option<&Mask>) -> Result<PooledFeatures> {
        self.check_inputs(image, mask)?;
        if self.options.backend == crate::backend::BackendKind::Triton {
            return Err(Error::Usage(
                "a shared prior needs CPEN's features, which a remote (Triton) prior does not give; use one prior per image"
                    .into(),
            ));
        }
        let spec = &self.bundle.spec;
        let (x, shape) = preprocess::network_input(image, mask, spec.size_multiple, spec.padding);
        let tile = self.tiling().tile;
        let core = if tile == 0 { shape[2].max(shape[3]) } else { tile };
        Ok(self.feature_sums(&x, &shape, core)?.0)
    }

    /// The prior of pooled features: CPEN's head on their mean, then the reverse diffusion loop from
    /// `noise` (None: the options' noise). Returns the condition and x after each step (the last is the
    /// IPR, for [`crate::Control::prior`]).
    pub fn shared_prior(&self, pooled: &PooledFeatures, noise: Option<&[f32]>) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
        let d = self.bundle.ipr_dim();
        if pooled.sums.len() != d || pooled.positions == 0 {
            return Err(Error::Shape(format!(
                "pooled features of {} channels over {} positions; this model's prior needs {d} channels over at least one",
                pooled.sums.len(),
                pooled.positions
            )));
        }
        let (noise, _) = self.settings(&super::Control {
            noise,
            ..super::Control::default()
        });
        let condition = self.head(&pooled.mean())?;
        let steps = self.sample(&condition, &noise)?;
        Ok((condition, steps))
    }
}
