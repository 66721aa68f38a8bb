//! Y'CbCr ↔ R'G'B' for YUV4MPEG2 streams: the BT.601, BT.709 and BT.2020 (non-constant luminance) matrices
//! in limited (studio) or full range at 8 to 16 bits, and the chroma subsampling of 4:2:0 and 4:2:2.

use crate::preprocess::Image;

/// The matrix that turns R'G'B' into Y'CbCr, by its luma weights (Kr, Kb).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matrix {
    /// ITU-R BT.601 (standard definition): Kr 0.299, Kb 0.114.
    Bt601,
    /// ITU-R BT.709 (HD): Kr 0.2126, Kb 0.0722.
    Bt709,
    /// ITU-R BT.2020 non-constant luminance (UHD): Kr 0.2627, Kb 0.0593.
    Bt2020,
}

impl Matrix {
    /// (Kr, Kb).
    fn weights(self) -> (f32, f32) {
        match self {
            Matrix::Bt601 => (0.299, 0.114),
            Matrix::Bt709 => (0.2126, 0.0722),
            Matrix::Bt2020 => (0.2627, 0.0593),
        }
    }

    /// The header tag's value (XCOLORMATRIX=…).
    pub fn name(self) -> &'static str {
        match self {
            Matrix::Bt601 => "BT601",
            Matrix::Bt709 => "BT709",
            Matrix::Bt2020 => "BT2020",
        }
    }

    /// A tag value (BT601, BT709, BT2020; also 601/709/2020, case-insensitive).
    pub fn from_name(s: &str) -> Option<Matrix> {
        match s.to_ascii_uppercase().trim_start_matches("BT").trim_start_matches('.') {
            "601" | "470BG" | "SMPTE170M" => Some(Matrix::Bt601),
            "709" => Some(Matrix::Bt709),
            "2020" | "2020NC" => Some(Matrix::Bt2020),
            _ => None,
        }
    }

    /// The usual guess where a stream names none: BT.709 from 720 lines up, BT.601 below (as players do).
    pub fn guess(height: usize) -> Matrix {
        if height >= 720 {
            Matrix::Bt709
        } else {
            Matrix::Bt601
        }
    }
}

/// How Y'CbCr samples map to [0, 1]: limited (Y' 16–235, C 16–240 at 8 bits) or full (0–255).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    /// Full range.
    pub full: bool,
    /// Bits per sample (8 to 16).
    pub bits: u32,
}

impl Levels {
    /// (Y' offset, Y' span, C span) in sample values; chroma is centred on 2^(bits−1).
    fn scale(self) -> (f32, f32, f32) {
        let unit = (1u32 << (self.bits - 8)) as f32;
        if self.full {
            let max = ((1u64 << self.bits) - 1) as f32;
            (0.0, max, max)
        } else {
            (16.0 * unit, 219.0 * unit, 224.0 * unit)
        }
    }

    fn max(self) -> f32 {
        ((1u64 << self.bits) - 1) as f32
    }

    fn mid(self) -> f32 {
        (1u32 << (self.bits - 1)) as f32
    }
}

/// One pixel's R'G'B' in [0, 1] as Y'CbCr sample values (unrounded).
pub fn rgb_to_ycbcr(rgb: [f32; 3], m: Matrix, l: Levels) -> [f32; 3] {
    let (kr, kb) = m.weights();
    let [r, g, b] = rgb;
    let y = kr * r + (1.0 - kr - kb) * g + kb * b;
    let cb = (b - y) / (2.0 * (1.0 - kb));
    let cr = (r - y) / (2.0 * (1.0 - kr));
    let (off, ys, cs) = l.scale();
    [off + ys * y, l.mid() + cs * cb, l.mid() + cs * cr]
}

/// Y'CbCr sample values as R'G'B' in [0, 1] (clamped).
pub fn ycbcr_to_rgb(ycc: [f32; 3], m: Matrix, l: Levels) -> [f32; 3] {
    let (kr, kb) = m.weights();
    let (off, ys, cs) = l.scale();
    let y = (ycc[0] - off) / ys;
    let cb = (ycc[1] - l.mid()) / cs;
    let cr = (ycc[2] - l.mid()) / cs;
    let r = y + 2.0 * (1.0 - kr) * cr;
    let b = y + 2.0 * (1.0 - kb) * cb;
    let g = (y - kr * r - kb * b) / (1.0 - kr - kb);
    [r.clamp(0.0, 1.0), g.clamp(0.0, 1.0), b.clamp(0.0, 1.0)]
}

/// The chroma subsampling: how many luma samples one chroma sample covers across and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subsampling {
    /// Horizontal factor (2 for 4:2:0 and 4:2:2).
    pub x: usize,
    /// Vertical factor (2 for 4:2:0).
    pub y: usize,
}

impl Subsampling {
    /// The chroma plane's size for a `height`×`width` picture.
    pub fn chroma_size(self, height: usize, width: usize) -> (usize, usize) {
        (height.div_ceil(self.y), width.div_ceil(self.x))
    }
}

/// Planar Y'CbCr samples (any depth up to 16 bits) of one picture.
#[derive(Debug, Clone, PartialEq)]
pub struct Planes {
    /// Luma, height × width.
    pub y: Vec<u16>,
    /// Cb at the chroma size.
    pub cb: Vec<u16>,
    /// Cr at the chroma size.
    pub cr: Vec<u16>,
    /// Luma height.
    pub height: usize,
    /// Luma width.
    pub width: usize,
}

/// A chroma plane sampled at luma position (y, x): bilinear between the chroma samples, whose centres sit
/// in the middle of the luma samples they cover.
fn chroma_at(plane: &[u16], ch: usize, cw: usize, s: Subsampling, y: usize, x: usize) -> f32 {
    let fy = ((y as f32 + 0.5) / s.y as f32 - 0.5).clamp(0.0, (ch - 1) as f32);
    let fx = ((x as f32 + 0.5) / s.x as f32 - 0.5).clamp(0.0, (cw - 1) as f32);
    let (y0, x0) = (fy.floor() as usize, fx.floor() as usize);
    let (y1, x1) = ((y0 + 1).min(ch - 1), (x0 + 1).min(cw - 1));
    let (ty, tx) = (fy - y0 as f32, fx - x0 as f32);
    let at = |yy: usize, xx: usize| plane[yy * cw + xx] as f32;
    let top = at(y0, x0) * (1.0 - tx) + at(y0, x1) * tx;
    let bottom = at(y1, x0) * (1.0 - tx) + at(y1, x1) * tx;
    top * (1.0 - ty) + bottom * ty
}

/// Planes as an RGB image in [0, 1].
pub fn planes_to_image(p: &Planes, s: Subsampling, m: Matrix, l: Levels) -> Image {
    let (ch, cw) = s.chroma_size(p.height, p.width);
    let mut data = Vec::with_capacity(p.height * p.width * 3);
    for y in 0..p.height {
        for x in 0..p.width {
            let luma = p.y[y * p.width + x] as f32;
            let (cb, cr) = if (s.x, s.y) == (1, 1) {
                (p.cb[y * cw + x] as f32, p.cr[y * cw + x] as f32)
            } else {
                (chroma_at(&p.cb, ch, cw, s, y, x), chroma_at(&p.cr, ch, cw, s, y, x))
            };
            data.extend(ycbcr_to_rgb([luma, cb, cr], m, l));
        }
    }
    Image::from_raw(p.height, p.width, data)
}

/// An RGB image as planes: chroma averaged over the luma samples each chroma sample covers, all rounded
/// and clamped to the depth.
pub fn image_to_planes(img: &Image, s: Subsampling, m: Matrix, l: Levels) -> Planes {
    let (h, w) = (img.height, img.width);
    let (ch, cw) = s.chroma_size(h, w);
    let q = |v: f32| v.round().clamp(0.0, l.max()) as u16;
    let mut y = Vec::with_capacity(h * w);
    let mut sums = vec![[0.0f32; 3]; ch * cw];
    for yy in 0..h {
        for xx in 0..w {
            let ycc = rgb_to_ycbcr(img.data[(yy * w + xx) * 3..][..3].try_into().expect("3 values"), m, l);
            y.push(q(ycc[0]));
            let sum = &mut sums[(yy / s.y) * cw + xx / s.x];
            sum[0] += ycc[1];
            sum[1] += ycc[2];
            sum[2] += 1.0;
        }
    }
    let cb = sums.iter().map(|v| q(v[0] / v[2])).collect();
    let cr = sums.iter().map(|v| q(v[1] / v[2])).collect();
    Planes {
        y,
        cb,
        cr,
        height: h,
        width: w,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITED8: Levels = Levels { full: false, bits: 8 };

    /// The 75%-free colour bars of BT.601 and BT.709 at 8 bits, limited range, as the standards tabulate
    /// them (rounded): white (235, 128, 128), red, green, blue.
    #[test]
    fn primaries_match_the_standards_tables() {
        let round = |v: [f32; 3]| v.map(|x| x.round() as i32);
        assert_eq!(
            round(rgb_to_ycbcr([1.0, 1.0, 1.0], Matrix::Bt601, LIMITED8)),
            [235, 128, 128]
        );
        assert_eq!(
            round(rgb_to_ycbcr([0.0, 0.0, 0.0], Matrix::Bt709, LIMITED8)),
            [16, 128, 128]
        );
        assert_eq!(
            round(rgb_to_ycbcr([1.0, 0.0, 0.0], Matrix::Bt601, LIMITED8)),
            [81, 90, 240]
        );
        assert_eq!(
            round(rgb_to_ycbcr([0.0, 1.0, 0.0], Matrix::Bt601, LIMITED8)),
            [145, 54, 34]
        );
        assert_eq!(
            round(rgb_to_ycbcr([0.0, 0.0, 1.0], Matrix::Bt601, LIMITED8)),
            [41, 240, 110]
        );
        assert_eq!(
            round(rgb_to_ycbcr([1.0, 0.0, 0.0], Matrix::Bt709, LIMITED8)),
            [63, 102, 240]
        );
        assert_eq!(
            round(rgb_to_ycbcr([0.0, 1.0, 0.0], Matrix::Bt709, LIMITED8)),
            [173, 42, 26]
        );
        // 10-bit limited: white 940, black 64, chroma centre 512; full range 8-bit white 255.
        let ten = Levels { full: false, bits: 10 };
        assert_eq!(
            round(rgb_to_ycbcr([1.0, 1.0, 1.0], Matrix::Bt2020, ten)),
            [940, 512, 512]
        );
        assert_eq!(
            round(rgb_to_ycbcr([0.0, 0.0, 0.0], Matrix::Bt2020, ten)),
            [64, 512, 512]
        );
        let full = Levels { full: true, bits: 8 };
        assert_eq!(
            round(rgb_to_ycbcr([1.0, 1.0, 1.0], Matrix::Bt709, full)),
            [255, 128, 128]
        );
    }

    /// Y'CbCr back to R'G'B' inverts the forward matrix (before rounding) for every matrix and range.
    #[test]
    fn the_inverse_inverts() {
        for m in [Matrix::Bt601, Matrix::Bt709, Matrix::Bt2020] {
            for l in [LIMITED8, Levels { full: true, bits: 10 }] {
                let rgb = [0.8, 0.3, 0.55];
                let back = ycbcr_to_rgb(rgb_to_ycbcr(rgb, m, l), m, l);
                for (a, b) in rgb.iter().zip(back) {
                    assert!((a - b).abs() < 1e-5, "{m:?} {l:?}: {rgb:?} -> {back:?}");
                }
            }
        }
    }

    /// A flat picture survives 4:2:0 exactly; chroma is the mean of the 2×2 luma block it covers.
    #[test]
    fn subsampling_averages_and_upsamples() {
        let s = Subsampling { x: 2, y: 2 };
        let img = Image::from_raw(3, 3, [0.2f32, 0.4, 0.6].repeat(9));
        let p = image_to_planes(&img, s, Matrix::Bt709, LIMITED8);
        assert_eq!((p.cb.len(), p.y.len()), (4, 9));
        let back = planes_to_image(&p, s, Matrix::Bt709, LIMITED8);
        for (a, b) in img.data.iter().zip(&back.data) {
            assert!((a - b).abs() < 3.0 / 255.0, "{a} vs {b}");
        }
        // Two columns of different chroma: each chroma sample is its block's mean.
        let mut data = vec![];
        for _ in 0..2 {
            data.extend([1.0f32, 0.0, 0.0, 0.0, 0.0, 1.0]);
        }
        let img = Image::from_raw(2, 2, data);
        let p = image_to_planes(&img, s, Matrix::Bt601, LIMITED8);
        let red = rgb_to_ycbcr([1.0, 0.0, 0.0], Matrix::Bt601, LIMITED8);
        let blue = rgb_to_ycbcr([0.0, 0.0, 1.0], Matrix::Bt601, LIMITED8);
        assert_eq!(p.cb, vec![((red[1] + blue[1]) / 2.0).round() as u16]);
    }
}
