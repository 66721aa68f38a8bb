//! Self-ensemble (test-time augmentation): the eight flips and rotations of an image restored and averaged.

use super::{Control, Pipeline, Progress, Restored};
use crate::error::Result;
use crate::preprocess::{Image, Mask};
use crate::tiling::Tiling;

impl Pipeline {
    /// Self-ensemble (test-time augmentation): restore the 8 flips and rotations of the image, undo each on
    /// its result and average them. 8x the time of one restore; the returned prior and timings are those of
    /// the untransformed pass, the timings summed over all eight.
    pub(super) fn restore_tta(
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
                progress: Some(&pass),
                ..*control
            };
            let r = self.run_restore(
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
