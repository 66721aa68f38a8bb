//! Pre- and post-processing exactly as the official scripts do it: bottom/right padding to the size
//! multiple, the inpainting network input, crop, clamp, composite and 8-bit quantisation.

use crate::bundle::Padding;

/// An RGB image in [0, 1], row-major H×W×3 float32. Built with [`Image::new`] (or read or decoded), which
/// checks the buffer against the size; the fields are public to read, but a value cannot be written out
/// field by field:
///
/// ```compile_fail
/// let bad = diffir::Image { height: 2, width: 2, data: vec![0.0; 3] };
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Image {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Row-major H×W×3 values.
    pub data: Vec<f32>,
}

impl Image {
    /// An image from its row-major H×W×3 values; an error (never a panic) when the buffer's length is not
    /// H·W·3 or a size is zero.
    pub fn new(height: usize, width: usize, data: Vec<f32>) -> crate::Result<Self> {
        if height == 0 || width == 0 || data.len() != height * width * 3 {
            return Err(crate::Error::Shape(format!(
                "an image of {height}x{width} needs {} values (H x W x 3), got {}",
                height * width * 3,
                data.len()
            )));
        }
        Ok(Image { height, width, data })
    }

    /// `new` for buffers built to size here.
    pub(crate) fn from_raw(height: usize, width: usize, data: Vec<f32>) -> Self {
        debug_assert_eq!(data.len(), height * width * 3, "image buffer size");
        Image { height, width, data }
    }

    /// A black image.
    pub fn zeros(height: usize, width: usize) -> Self {
        Image::from_raw(height, width, vec![0.0; height * width * 3])
    }

    #[inline]
    /// The RGB values of one pixel.
    pub fn pixel(&self, y: usize, x: usize) -> &[f32] {
        let i = (y * self.width + x) * 3;
        &self.data[i..i + 3]
    }
}

/// A binary inpainting mask, H×W, 1 = hole. Built with [`Mask::new`] (or read or decoded), which checks the
/// buffer against the size; the fields are public to read, not to build with:
///
/// ```compile_fail
/// let bad = diffir::Mask { height: 2, width: 2, data: vec![1.0] };
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Mask {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Row-major H×W values; > 0 is a hole.
    pub data: Vec<f32>,
}

impl Mask {
    /// A mask from its row-major H×W values; an error when the length is not H·W, a size is zero or a value
    /// is not finite.
    pub fn new(height: usize, width: usize, data: Vec<f32>) -> crate::Result<Self> {
        if height == 0 || width == 0 || data.len() != height * width {
            return Err(crate::Error::Shape(format!(
                "a mask of {height}x{width} needs {} values, got {}",
                height * width,
                data.len()
            )));
        }
        if data.iter().any(|v| !v.is_finite()) {
            return Err(crate::Error::Shape("a mask value is NaN or infinite".into()));
        }
        Ok(Mask { height, width, data })
    }
}

/// How the float result becomes 8-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantize {
    /// round(x·255) (basicsr's tensor2img: SR and deblurring).
    Round,
    /// trunc(clip(x·255)) (LaMa's predict script: inpainting).
    Truncate,
}

impl Quantize {
    #[inline]
    /// One float in [0, 1] as an 8-bit sample.
    pub fn to_u8(self, v: f32) -> u8 {
        let s = (v * 255.0).clamp(0.0, 255.0);
        match self {
            Quantize::Round => s.round() as u8,
            Quantize::Truncate => s as u8,
        }
    }
}

/// Padding needed to reach a multiple.
pub fn pad_amount(n: usize, multiple: usize) -> usize {
    (multiple - n % multiple) % multiple
}

/// Source index of padded position `i` in an axis of length `n` (i may exceed n − 1).
///
/// 'reflect' mirrors without repeating the edge (period 2(n−1)); 'symmetric' repeats it (period 2n). Both
/// extend periodically for pads larger than the image, as NumPy does, so tiny images still work.
#[inline]
pub fn source_index(i: usize, n: usize, mode: Padding) -> usize {
    if i < n {
        return i;
    }
    match mode {
        Padding::Reflect => {
            if n == 1 {
                return 0;
            }
            let period = 2 * (n - 1);
            let j = i % period;
            if j < n {
                j
            } else {
                period - j
            }
        }
        Padding::Symmetric => {
            let period = 2 * n;
            let j = i % period;
            if j < n {
                j
            } else {
                period - 1 - j
            }
        }
    }
}

/// The network's NCHW input (batch 1) for an image padded to `multiple`; for inpainting
/// (`mask` given) 4 channels = RGB·(1 − mask) and the mask, both padded the same way.
pub fn network_input(image: &Image, mask: Option<&Mask>, multiple: usize, mode: Padding) -> (Vec<f32>, [usize; 4]) {
    let (h, w) = (image.height, image.width);
    let hp = h + pad_amount(h, multiple);
    let wp = w + pad_amount(w, multiple);
    let channels = if mask.is_some() { 4 } else { 3 };
    let plane = hp * wp;
    let mut out = vec![0.0f32; channels * plane];
    let xs: Vec<usize> = (0..wp).map(|x| source_index(x, w, mode)).collect();
    for y in 0..hp {
        let sy = source_index(y, h, mode);
        for (x, &sx) in xs.iter().enumerate() {
            let px = image.pixel(sy, sx);
            let o = y * wp + x;
            match mask {
                None => {
                    for c in 0..3 {
                        out[c * plane + o] = px[c];
                    }
                }
                Some(m) => {
                    let mv = m.data[sy * m.width + sx];
                    for c in 0..3 {
                        out[c * plane + o] = px[c] * (1.0 - mv);
                    }
                    out[3 * plane + o] = mv;
                }
            }
        }
    }
    (out, [1, channels, hp, wp])
}

/// Crop an NCHW (batch 1, 3 channels) network output to H×W, then clamp (and composite) as `finish_in_place`.
pub fn finish(
    output: &[f32],
    out_shape: &[usize],
    height: usize,
    width: usize,
    composite: Option<(&Image, &Mask)>,
) -> Image {
    let (oh, ow) = (out_shape[2], out_shape[3]);
    debug_assert!(out_shape[1] == 3 && oh >= height && ow >= width);
    let plane = oh * ow;
    let mut data = vec![0.0f32; height * width * 3];
    for y in 0..height {
        for x in 0..width {
            for c in 0..3 {
                data[(y * width + x) * 3 + c] = output[c * plane + y * ow + x];
            }
        }
    }
    let mut img = Image::from_raw(height, width, data);
    finish_in_place(&mut img, composite);
    img
}

/// Clamp an assembled H×W×3 result to [0, 1], compositing mask·pred + (1 − mask)·image first for inpainting.
pub fn finish_in_place(out: &mut Image, composite: Option<(&Image, &Mask)>) {
    match composite {
        None => out.data.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0)),
        Some((img, mask)) => {
            for (i, px) in out.data.chunks_exact_mut(3).enumerate() {
                let m = mask.data[i];
                for (c, v) in px.iter_mut().enumerate() {
                    *v = (m * *v + (1.0 - m) * img.data[i * 3 + c]).clamp(0.0, 1.0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NumPy: np.pad(np.arange(n), (0, pad), mode) for a few n and pads, including pads larger than n.
    #[test]
    fn constructors_validate_instead_of_panicking() {
        assert!(Image::new(2, 2, vec![0.0; 12]).is_ok());
        let e = Image::new(2, 2, vec![0.0; 11]).unwrap_err().to_string();
        assert!(e.contains("2x2") && e.contains("12") && e.contains("11"), "{e}");
        assert!(Image::new(0, 2, vec![]).is_err());
        assert!(Mask::new(2, 3, vec![0.0; 6]).is_ok());
        assert!(Mask::new(2, 3, vec![0.0; 5]).is_err());
        assert!(Mask::new(1, 1, vec![f32::NAN]).is_err());
    }

    #[test]
    fn padding_matches_numpy() {
        let idx = |n: usize, pad: usize, mode| (0..n + pad).map(|i| source_index(i, n, mode)).collect::<Vec<_>>();
        assert_eq!(idx(3, 5, Padding::Reflect), [0, 1, 2, 1, 0, 1, 2, 1]);
        assert_eq!(idx(3, 5, Padding::Symmetric), [0, 1, 2, 2, 1, 0, 0, 1]);
        assert_eq!(idx(1, 3, Padding::Reflect), [0, 0, 0, 0]);
        assert_eq!(idx(1, 3, Padding::Symmetric), [0, 0, 0, 0]);
        assert_eq!(idx(2, 7, Padding::Reflect), [0, 1, 0, 1, 0, 1, 0, 1, 0]);
        assert_eq!(idx(5, 3, Padding::Reflect), [0, 1, 2, 3, 4, 3, 2, 1]);
        assert_eq!(idx(5, 3, Padding::Symmetric), [0, 1, 2, 3, 4, 4, 3, 2]);
    }

    #[test]
    fn pad_amounts() {
        assert_eq!(pad_amount(8, 8), 0);
        assert_eq!(pad_amount(9, 8), 7);
        assert_eq!(pad_amount(1, 32), 31);
    }

    #[test]
    fn inpainting_input_masks_rgb_and_appends_the_mask() {
        let img = Image::new(1, 2, vec![0.2, 0.4, 0.6, 0.8, 1.0, 0.5]).unwrap();
        let mask = Mask {
            height: 1,
            width: 2,
            data: vec![0.0, 1.0],
        };
        let (x, shape) = network_input(&img, Some(&mask), 2, Padding::Symmetric);
        assert_eq!(shape, [1, 4, 2, 2]);
        // Row 1 repeats row 0 (symmetric); pixel 1 is a hole.
        assert_eq!(&x[0..4], &[0.2, 0.0, 0.2, 0.0]);
        assert_eq!(&x[12..16], &[0.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn finish_crops_clamps_and_composites() {
        let out = vec![
            1.5, 0.5, -1.0, 0.25, // R (2x2)
            0.1, 0.2, 0.3, 0.4, // G
            0.5, 0.6, 0.7, 0.8, // B
        ];
        let img = finish(&out, &[1, 3, 2, 2], 1, 2, None);
        assert_eq!(img.data, vec![1.0, 0.1, 0.5, 0.5, 0.2, 0.6]);
        let orig = Image::new(1, 2, vec![0.9; 6]).unwrap();
        let mask = Mask {
            height: 1,
            width: 2,
            data: vec![1.0, 0.0],
        };
        let img = finish(&out, &[1, 3, 2, 2], 1, 2, Some((&orig, &mask)));
        assert_eq!(img.data, vec![1.0, 0.1, 0.5, 0.9, 0.9, 0.9]);
    }

    #[test]
    fn quantisation_rounds_or_truncates() {
        assert_eq!(Quantize::Round.to_u8(0.5), 128);
        assert_eq!(Quantize::Truncate.to_u8(0.5), 127);
        assert_eq!(Quantize::Round.to_u8(1.2), 255);
        assert_eq!(Quantize::Truncate.to_u8(-0.1), 0);
    }
}
