//! Pictures from arrays of samples and back: what a caller holding pixels in memory (the Python package's
//! numpy arrays) hands over and gets back, converted by the same formulas as files are decoded and encoded,
//! so an array restored in memory holds the samples the CLI writes for the same image.

use std::path::Path;

use super::{Carry, Depth, Picture};
use crate::error::{Error, Result};
use crate::preprocess::{Image, Mask, Quantize};

/// A sample type a picture may be held in: 8-bit and 16-bit integers as image files hold them, or float32
/// in [0, 1] as `.npy` files do.
pub trait Sample: Copy + Send + Sync + 'static {
    /// The depth a picture of these samples has (kept for its result).
    const DEPTH: Depth;
    /// The sample as a value in [0, 1] (8-bit divided by 255, 16-bit by 65535, as files are decoded). A
    /// float must be finite and in [0, 1]; `None` otherwise.
    fn to_unit(self) -> Option<f32>;
    /// A result value in [0, 1] as this sample type: 8-bit quantised as `quantize` says, 16-bit rounded
    /// (as files are encoded); a float unchanged.
    fn from_unit(v: f32, quantize: Quantize) -> Self;
}

impl Sample for u8 {
    const DEPTH: Depth = Depth::Eight;
    fn to_unit(self) -> Option<f32> {
        Some(self as f32 / 255.0)
    }
    fn from_unit(v: f32, quantize: Quantize) -> Self {
        quantize.to_u8(v)
    }
}

impl Sample for u16 {
    const DEPTH: Depth = Depth::Sixteen;
    fn to_unit(self) -> Option<f32> {
        Some(self as f32 / 65535.0)
    }
    fn from_unit(v: f32, _: Quantize) -> Self {
        (v.clamp(0.0, 1.0) * 65535.0).round() as u16
    }
}

impl Sample for f32 {
    const DEPTH: Depth = Depth::Float;
    fn to_unit(self) -> Option<f32> {
        (self.is_finite() && (0.0..=1.0).contains(&self)).then_some(self)
    }
    fn from_unit(v: f32, _: Quantize) -> Self {
        v
    }
}

/// Where in-memory pictures are named in messages.
const IN_MEMORY: &str = "(in memory)";

impl Picture {
    /// A picture of `height`×`width` pixels of `channels` interleaved samples each, row by row: 1 is
    /// grayscale (its result is grayscale), 2 grayscale with alpha, 3 RGB, 4 RGBA. At most `max_pixels`
    /// pixels. The samples are read once, in order, so a strided view needs no copy of its own.
    pub fn from_samples<S: Sample>(
        height: usize,
        width: usize,
        channels: usize,
        samples: impl IntoIterator<Item = S>,
        max_pixels: u64,
    ) -> Result<Picture> {
        if !(1..=4).contains(&channels) {
            return Err(Error::Shape(format!(
                "an image has 1 (gray), 2 (gray and alpha), 3 (RGB) or 4 (RGBA) channels, not {channels}"
            )));
        }
        if height == 0 || width == 0 {
            return Err(Error::Shape(format!("the image is empty ({height}x{width})")));
        }
        super::check_pixels(Path::new(IN_MEMORY), height as u64, width as u64, max_pixels)?;
        let pixels = height * width;
        let (gray, has_alpha) = (channels <= 2, matches!(channels, 2 | 4));
        let mut rgb = Vec::with_capacity(pixels * 3);
        let mut alpha = has_alpha.then(|| Vec::with_capacity(pixels));
        let mut px = [0f32; 4];
        let mut n = 0usize;
        for s in samples {
            let c = n % channels;
            px[c] = s
                .to_unit()
                .ok_or_else(|| Error::input(IN_MEMORY, "float samples must be finite and lie in [0, 1]".to_string()))?;
            n += 1;
            if c + 1 == channels {
                if gray {
                    rgb.extend([px[0]; 3]);
                } else {
                    rgb.extend_from_slice(&px[..3]);
                }
                if let Some(a) = alpha.as_mut() {
                    a.push(px[channels - 1]);
                }
            }
        }
        if n != pixels * channels {
            return Err(Error::Shape(format!(
                "{height}x{width}x{channels} needs {} samples, got {n}",
                pixels * channels
            )));
        }
        let mut picture = Picture::new(Image::from_raw(height, width, rgb), alpha)?;
        picture.depth = S::DEPTH;
        picture.gray = gray;
        Ok(picture)
    }
}

impl Mask {
    /// An inpainting mask from one value per pixel, row by row: any value that is not zero is a hole, as
    /// mask files are read.
    pub fn from_holes(height: usize, width: usize, holes: impl IntoIterator<Item = bool>) -> Result<Mask> {
        let data: Vec<f32> = holes.into_iter().map(|h| if h { 1.0 } else { 0.0 }).collect();
        if data.len() != height * width {
            return Err(Error::Shape(format!(
                "a {height}x{width} mask needs {} values, got {}",
                height * width,
                data.len()
            )));
        }
        Mask::new(height, width, data)
    }
}

/// Samples per output pixel: gray or RGB, with alpha where the result carries it.
pub(crate) fn channels(carry: &Carry<'_>) -> usize {
    match (carry.gray, carry.alpha.is_some()) {
        (true, false) => 1,
        (true, true) => 2,
        (false, false) => 3,
        (false, true) => 4,
    }
}

/// The output samples in [0, 1] of the pixels in `range`, interleaved: gray as BT.601 luma of the RGB, then
/// the alpha, as `channels` counts them.
pub(crate) fn interleaved<'a>(
    image: &'a Image,
    carry: &'a Carry<'a>,
    range: std::ops::Range<usize>,
) -> impl Iterator<Item = f32> + 'a {
    let n = channels(carry);
    image.data[range.start * 3..range.end * 3]
        .chunks_exact(3)
        .zip(range)
        .flat_map(move |(px, i)| {
            let mut v: [f32; 4] = [0.0; 4];
            let c = if carry.gray {
                v[0] = 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2];
                1
            } else {
                v[..3].copy_from_slice(px);
                3
            };
            if let Some(a) = carry.alpha {
                v[c] = a[i];
            }
            v.into_iter().take(n)
        })
}

/// The alpha a result carries has one value per pixel.
pub(super) fn check_alpha(image: &Image, carry: &Carry<'_>) -> Result<()> {
    match carry.alpha {
        Some(a) if a.len() != image.height * image.width => Err(Error::Shape(format!(
            "alpha has {} values for a {}x{} image",
            a.len(),
            image.width,
            image.height
        ))),
        _ => Ok(()),
    }
}

/// A result as H×W×`channels(carry)` samples of type `S`, row by row: the samples an image file of that
/// depth holds for it (8-bit quantised by `quantize`).
pub fn to_samples<S: Sample>(image: &Image, carry: &Carry<'_>, quantize: Quantize) -> Result<Vec<S>> {
    check_alpha(image, carry)?;
    Ok(interleaved(image, carry, 0..image.height * image.width)
        .map(|v| S::from_unit(v, quantize))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The formulas are the decoder's and the encoder's: 8-bit over 255, 16-bit over 65535 and rounded back,
    /// 8-bit out by the task's quantisation, floats outside [0, 1] refused.
    #[test]
    fn samples_convert_as_files_do() {
        assert_eq!(128u8.to_unit(), Some(128.0 / 255.0));
        assert_eq!(u16::from_unit(0.5, Quantize::Round), 32768);
        assert_eq!(u16::from_unit(1.5, Quantize::Round), 65535);
        assert_eq!(u8::from_unit(0.999, Quantize::Round), 255);
        assert_eq!(u8::from_unit(0.999, Quantize::Truncate), 254);
        assert_eq!(f32::NAN.to_unit(), None);
        assert_eq!(1.01f32.to_unit(), None);
        assert_eq!(0.25f32.to_unit(), Some(0.25));
    }

    #[test]
    fn gray_and_alpha_round_trip() {
        // 1x2 gray with alpha: replicated to RGB, alpha kept, depth and gray recorded.
        let p = Picture::from_samples(1, 2, 2, [0u16, 65535, 65535, 0], 100).unwrap();
        assert_eq!(p.rgb.data, [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        assert_eq!(p.alpha.as_deref(), Some(&[1.0, 0.0][..]));
        assert_eq!((p.depth, p.gray), (Depth::Sixteen, true));
        let carry = Carry {
            alpha: p.alpha.as_deref(),
            sixteen_bit: true,
            gray: true,
            icc: None,
        };
        let back: Vec<u16> = to_samples(&p.rgb, &carry, Quantize::Round).unwrap();
        assert_eq!(back, [0, 65535, 65535, 0]);
    }

    #[test]
    fn bad_arrays_name_what_is_wrong() {
        let e = Picture::from_samples(2, 2, 3, [0u8; 11], 100).unwrap_err().to_string();
        assert_eq!(e, "2x2x3 needs 12 samples, got 11");
        let e = Picture::from_samples(1, 1, 5, [0u8; 5], 100).unwrap_err().to_string();
        assert!(e.contains("not 5"), "{e}");
        let e = Picture::from_samples(10, 10, 3, [0u8; 300], 99).unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }), "{e}");
        let e = Picture::from_samples(1, 1, 3, [0.0f32, 2.0, 0.0], 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("[0, 1]"), "{e}");
        let m = Mask::from_holes(1, 3, [false, true, true]).unwrap();
        assert_eq!(m.data, [0.0, 1.0, 1.0]);
        assert!(Mask::from_holes(2, 2, [true]).is_err());
    }
}
