//! The reverse diffusion loop over the 256-d prior (IPR): deterministic given the initial noise.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::Result;
use crate::schedule::Schedule;

/// Draw the initial noise x_T (one row of `dim` standard normals) reproducibly from a seed.
pub fn seeded_noise(seed: u64, dim: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..dim).map(|_| StandardNormal.sample(&mut rng)).collect()
}

/// Run t = T−1 … 0: x ← coef1\[t\]·x̂0(x, t, c) + coef2\[t\]·x, with no noise added and no clipping.
///
/// `denoise(x, t)` returns x̂0. The update is computed in f64 and rounded to f32 for the next graph call.
/// Returns x after every step; the last one is the IPR.
pub fn reverse_chain(
    schedule: &Schedule,
    noise: &[f32],
    mut denoise: impl FnMut(&[f32], i64) -> Result<Vec<f32>>,
) -> Result<Vec<Vec<f32>>> {
    let mut x = noise.to_vec();
    let mut steps = Vec::with_capacity(schedule.timesteps());
    for t in (0..schedule.timesteps()).rev() {
        let x0 = denoise(&x, t as i64)?;
        let (c1, c2) = (schedule.coef1[t], schedule.coef2[t]);
        x = x0
            .iter()
            .zip(&x)
            .map(|(&p, &xi)| (c1 * p as f64 + c2 * xi as f64) as f32)
            .collect();
        steps.push(x.clone());
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_noise_is_reproducible_and_standard() {
        let a = seeded_noise(3, 4096);
        assert_eq!(a, seeded_noise(3, 4096));
        assert_ne!(a, seeded_noise(4, 4096));
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.08, "mean {mean} var {var}");
    }

    /// With a denoiser that returns a constant, the chain is a closed-form affine recursion.
    #[test]
    fn chain_follows_the_posterior_mean_update() {
        let s = Schedule::new(4, 0.1, 0.99);
        let mut seen = vec![];
        let steps = reverse_chain(&s, &[1.0, -2.0], |x, t| {
            seen.push(t);
            Ok(x.iter().map(|v| v * 0.5 + 0.25).collect())
        })
        .unwrap();
        assert_eq!(seen, [3, 2, 1, 0]);
        let mut want = [1.0f64, -2.0];
        for t in (0..4).rev() {
            for w in &mut want {
                *w = s.coef1[t] * (*w * 0.5 + 0.25) + s.coef2[t] * *w;
            }
        }
        for (got, want) in steps[3].iter().zip(want) {
            assert!((*got as f64 - want).abs() < 1e-6);
        }
        // At t = 0 coef1 = 1 and coef2 = 0: the IPR is the last prediction.
        let x1 = &steps[2];
        for (ipr, x) in steps[3].iter().zip(x1) {
            assert!((ipr - (x * 0.5 + 0.25)).abs() < 1e-6);
        }
    }
}
