//! Shots: a cheap cut score between consecutive frames (the mean absolute difference of 16×16 grids of
//! cell luma means, in [0, 1]), cuts where it passes the threshold, and long shots split at a bound.

use crate::preprocess::Image;

/// Cells across and down of the grid the cut score compares.
const GRID: usize = 16;

/// The default `--scene-threshold`: a cut where the grids differ by more than this on average.
pub const DEFAULT_THRESHOLD: f32 = 0.1;

/// The default bound on a shot's length in frames (10 s at 24 fps): longer shots are split, so a prior
/// follows slow changes of light and content.
pub const DEFAULT_MAX_SHOT: usize = 240;

/// A frame's 16×16 grid of cell luma means (BT.709 weights), compared between frames for cuts.
#[derive(Debug, Clone, PartialEq)]
pub struct Thumb(Vec<f32>);

impl Thumb {
    /// The grid of `img` (cells as even as the size allows; a cell of a picture smaller than the grid is
    /// one pixel).
    pub fn of(img: &Image) -> Thumb {
        let (h, w) = (img.height, img.width);
        let mut sums = vec![0.0f64; GRID * GRID];
        let mut counts = vec![0u32; GRID * GRID];
        for y in 0..h {
            let cy = y * GRID / h;
            for x in 0..w {
                let p = img.pixel(y, x);
                let luma = 0.2126 * p[0] + 0.7152 * p[1] + 0.0722 * p[2];
                let c = cy * GRID + x * GRID / w;
                sums[c] += luma as f64;
                counts[c] += 1;
            }
        }
        Thumb(
            sums.iter()
                .zip(&counts)
                .filter(|(_, &n)| n > 0)
                .map(|(s, &n)| (s / n as f64) as f32)
                .collect(),
        )
    }

    /// The cut score against the previous frame's grid: mean absolute difference, in [0, 1] (1 where the
    /// sizes differ).
    pub fn score(&self, previous: &Thumb) -> f32 {
        if self.0.len() != previous.0.len() || self.0.is_empty() {
            return 1.0;
        }
        self.0.iter().zip(&previous.0).map(|(a, b)| (a - b).abs()).sum::<f32>() / self.0.len() as f32
    }
}

/// Where shots start: frame 0, each frame whose score passes `threshold`, and every `max_len` frames
/// within a shot. `scores[i]` compares frame i with frame i − 1 (`scores[0]` is not read).
pub fn shot_starts(scores: &[f32], threshold: f32, max_len: usize) -> Vec<usize> {
    let mut starts = vec![];
    for (i, &s) in scores.iter().enumerate() {
        let cut = i == 0 || s > threshold;
        let too_long = starts.last().is_some_and(|&first| i - first >= max_len.max(1));
        if cut || too_long {
            starts.push(i);
        }
    }
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(v: f32, h: usize, w: usize) -> Image {
        Image::from_raw(h, w, vec![v; h * w * 3])
    }

    /// Identical frames score 0, black against white 1; cuts at the threshold and splits at the bound.
    #[test]
    fn scores_and_starts() {
        let (a, b) = (Thumb::of(&flat(0.0, 48, 64)), Thumb::of(&flat(1.0, 48, 64)));
        assert_eq!(a.score(&a), 0.0);
        assert!((a.score(&b) - 1.0).abs() < 1e-6);
        assert_eq!(Thumb::of(&flat(0.5, 3, 5)).0.len(), 15);
        assert_eq!(a.score(&Thumb::of(&flat(0.0, 3, 5))), 1.0);
        let scores = [0.0, 0.01, 0.5, 0.02, 0.02, 0.02, 0.02, 0.3];
        assert_eq!(shot_starts(&scores, 0.1, 100), vec![0, 2, 7]);
        assert_eq!(shot_starts(&scores, 0.1, 2), vec![0, 2, 4, 6, 7]);
        assert_eq!(shot_starts(&scores, 1.0, 100), vec![0]);
    }
}
