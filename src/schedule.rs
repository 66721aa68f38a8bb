//! The IPR sampler's noise schedule, computed in f64 from its formula and checked against bundles.
//!
//! betas are the squares of `linspace(sqrt(start), sqrt(end), T)` (the upstream code calls this the "linear"
//! schedule); the reverse step uses only the posterior-mean coefficients.

/// Posterior-mean coefficients of the reverse step x ← coef1\[t\]·x̂0 + coef2\[t\]·x.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Betas, per step.
    pub betas: Vec<f64>,
    /// Cumulative products of (1 − beta).
    pub alphas_cumprod: Vec<f64>,
    /// Posterior-mean coefficient of x̂0, per step.
    pub coef1: Vec<f64>,
    /// Posterior-mean coefficient of x_t, per step.
    pub coef2: Vec<f64>,
}

impl Schedule {
    /// The schedule for `timesteps` steps between `linear_start` and `linear_end`.
    pub fn new(timesteps: usize, linear_start: f64, linear_end: f64) -> Self {
        let (a, b) = (linear_start.sqrt(), linear_end.sqrt());
        let betas: Vec<f64> = (0..timesteps)
            .map(|i| {
                let s = if timesteps == 1 {
                    a
                } else {
                    a + (b - a) * i as f64 / (timesteps - 1) as f64
                };
                s * s
            })
            .collect();
        let mut alphas_cumprod = Vec::with_capacity(timesteps);
        let mut acc = 1.0;
        for beta in &betas {
            acc *= 1.0 - beta;
            alphas_cumprod.push(acc);
        }
        let mut coef1 = Vec::with_capacity(timesteps);
        let mut coef2 = Vec::with_capacity(timesteps);
        for t in 0..timesteps {
            let prev = if t == 0 { 1.0 } else { alphas_cumprod[t - 1] };
            let denom = 1.0 - alphas_cumprod[t];
            coef1.push(betas[t] * prev.sqrt() / denom);
            coef2.push((1.0 - prev) * (1.0 - betas[t]).sqrt() / denom);
        }
        Schedule {
            betas,
            alphas_cumprod,
            coef1,
            coef2,
        }
    }

    /// Reverse steps T.
    pub fn timesteps(&self) -> usize {
        self.betas.len()
    }

    /// Largest |difference| between these coefficients and the given ones, or None if the lengths differ.
    pub fn max_coef_diff(&self, coef1: &[f64], coef2: &[f64]) -> Option<f64> {
        if coef1.len() != self.coef1.len() || coef2.len() != self.coef2.len() {
            return None;
        }
        let pairs = self.coef1.iter().zip(coef1).chain(self.coef2.iter().zip(coef2));
        Some(pairs.map(|(a, b)| (a - b).abs()).fold(0.0, f64::max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
        }
    }

    /// The spec's table (§4.1), computed with NumPy in float64.
    #[test]
    fn default_schedule_matches_spec_table() {
        let s = Schedule::new(4, 0.1, 0.99);
        close(&s.betas, &[0.1, 0.29428562420046467, 0.5909522908671314, 0.99], 1e-15);
        close(
            &s.alphas_cumprod,
            &[0.9, 0.6351429382195818, 0.259803763850639, 0.0025980376385063924],
            1e-15,
        );
        close(
            &s.coef1,
            &[
                1.0000000000000002,
                0.7651869342284294,
                0.6362697629903223,
                0.5059268116635789,
            ],
            1e-14,
        );
        close(
            &s.coef2,
            &[0.0, 0.23024580474748482, 0.31525564103393855, 0.07421243030210604],
            1e-14,
        );
    }

    /// The digits are the spec's printout of the float32 buffers.
    #[test]
    // The literals are the spec's printout, digit for digit, so that they can be compared with it.
    #[allow(clippy::excessive_precision)]
    fn float32_coefficients_match_the_stored_buffers() {
        let s = Schedule::new(4, 0.1, 0.99);
        let c1: Vec<f32> = s.coef1.iter().map(|&v| v as f32).collect();
        let c2: Vec<f32> = s.coef2.iter().map(|&v| v as f32).collect();
        assert_eq!(c1, [1.0, 0.7651869058609009, 0.636269748210907, 0.505926787853241]);
        assert_eq!(c2, [0.0, 0.23024579882621765, 0.31525564193725586, 0.07421243190765381]);
    }

    #[test]
    fn last_step_returns_the_prediction() {
        for t in [1, 2, 4, 6, 10] {
            let s = Schedule::new(t, 0.05, 0.9);
            assert!((s.coef1[0] - 1.0).abs() < 1e-12 && s.coef2[0].abs() < 1e-12);
            assert_eq!(s.timesteps(), t);
        }
    }

    #[test]
    fn coefficient_comparison() {
        let s = Schedule::new(4, 0.1, 0.99);
        assert_eq!(s.max_coef_diff(&s.coef1, &s.coef2), Some(0.0));
        assert_eq!(s.max_coef_diff(&s.coef1[..3], &s.coef2), None);
        let mut c2 = s.coef2.clone();
        c2[2] += 1e-3;
        assert!((s.max_coef_diff(&s.coef1, &c2).unwrap() - 1e-3).abs() < 1e-12);
    }
}
