//! Reading inputs (images, masks, .npy) and writing results atomically, by file extension. This file
//! decodes; `encode.rs` writes.

use std::path::Path;

use image::{ColorType, DynamicImage, ImageDecoder};
use ndarray::{Array2, Array3};
use ndarray_npy::ReadNpyExt;

use crate::error::{Error, Result};
use crate::preprocess::{Image, Mask};

mod encode;
mod samples;

use encode::extension;
pub use encode::*;
pub use samples::{to_samples, Sample};

/// Whether a path names a file this tool reads.
pub fn is_supported_input(path: &Path) -> bool {
    OutputFormat::from_extension(&extension(path)).is_some()
}

/// Sample depth of an input, kept for the output where the format allows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// 8 bits per sample.
    Eight,
    /// 16 bits per sample.
    Sixteen,
    /// A float32 `.npy`.
    Float,
}

/// A decoded input: RGB for the model, plus what the output must carry over.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Picture {
    /// RGB in [0, 1] (grayscale replicated to three channels).
    pub rgb: Image,
    /// The alpha channel in [0, 1], H×W, if the file has one.
    pub alpha: Option<Vec<f32>>,
    /// Sample depth of the input, kept where the output format allows.
    pub depth: Depth,
    /// The file is grayscale: the result is written as grayscale.
    pub gray: bool,
    /// The embedded ICC colour profile, carried to the output (at most 4 MiB: a larger one is dropped with
    /// a note).
    pub icc: Option<Vec<u8>>,
    /// What decoding left out, in words, for the user (an ICC profile over the limit).
    pub notes: Vec<String>,
}

impl Picture {
    /// An 8-bit colour picture of `rgb` with an optional alpha channel (H×W values in [0, 1]); an error when
    /// the alpha's length is not the image's H·W. Decoding fills the other fields from the file.
    pub fn new(rgb: Image, alpha: Option<Vec<f32>>) -> Result<Picture> {
        if let Some(a) = &alpha {
            if a.len() != rgb.height * rgb.width {
                return Err(Error::Shape(format!(
                    "an alpha channel of {}x{} needs {} values, got {}",
                    rgb.height,
                    rgb.width,
                    rgb.height * rgb.width,
                    a.len()
                )));
            }
        }
        Ok(Picture {
            rgb,
            alpha,
            depth: Depth::Eight,
            gray: false,
            icc: None,
            notes: vec![],
        })
    }
}

/// Default `--max-pixels`: inputs larger than this are refused before decoding.
pub const DEFAULT_MAX_PIXELS: u64 = 200_000_000;

/// Read an input: any supported image (EXIF orientation applied, palette expanded) or a float32 H×W×3
/// `.npy` in [0, 1]. Images over `max_pixels` are refused before their pixels are allocated. 8-bit values
/// are divided by 255 exactly like the official loaders; 16-bit by 65535.
pub fn read_picture(path: &Path, max_pixels: u64) -> Result<Picture> {
    if extension(path) == "npy" {
        let rgb = read_npy_image(path)?;
        check_pixels(path, rgb.height as u64, rgb.width as u64, max_pixels)?;
        return Ok(Picture {
            rgb,
            alpha: None,
            depth: Depth::Float,
            gray: false,
            icc: None,
            notes: vec![],
        });
    }
    let (img, icc, notes) = decode(path, max_pixels)?;
    Ok(picture_from(img, icc, notes, image_is_bmp(path)))
}

/// Decode an encoded image held in memory (PNG, JPEG, WebP, TIFF, BMP) with the same handling as files:
/// 16-bit, alpha, grayscale, palette, EXIF orientation, ICC, and `max_pixels` checked from the header.
/// Returns the picture and the format it was in (`label` names the source in errors).
pub fn decode_picture(bytes: &[u8], label: &Path, max_pixels: u64) -> Result<(Picture, OutputFormat)> {
    let (img, icc, notes, format) = decode_bytes(bytes, label, max_pixels)?;
    let out = match format {
        image::ImageFormat::Jpeg => OutputFormat::Jpeg,
        image::ImageFormat::WebP => OutputFormat::Webp,
        image::ImageFormat::Tiff => OutputFormat::Tiff,
        image::ImageFormat::Bmp => OutputFormat::Bmp,
        _ => OutputFormat::Png,
    };
    Ok((picture_from(img, icc, notes, format == image::ImageFormat::Bmp), out))
}

/// A decoded image, its ICC profile, notes on what was dropped, and the format it was in.
type Decoded = (DynamicImage, Option<Vec<u8>>, Vec<String>, image::ImageFormat);

/// Decode from memory: a PNG whose ICC profile expands past the limit without that chunk, a stored
/// profile over the limit dropped after decoding; each with a note.
fn decode_bytes(bytes: &[u8], label: &Path, max_pixels: u64) -> Result<Decoded> {
    Ok(
        match crate::icc::oversized_png_profile(&mut std::io::Cursor::new(bytes)).map_err(|e| Error::io(label, e))? {
            Some((start, end)) => {
                let stripped = [&bytes[..start as usize], &bytes[end as usize..]].concat();
                let (img, icc, format) = decode_from(
                    image::ImageReader::new(std::io::Cursor::new(stripped)),
                    label,
                    max_pixels,
                )?;
                let note = crate::icc::dropped_note(&crate::icc::Dropped::Over);
                (img, icc, vec![note], format)
            }
            None => {
                let (img, icc, format) =
                    decode_from(image::ImageReader::new(std::io::Cursor::new(bytes)), label, max_pixels)?;
                let (icc, notes) = limit_icc(icc);
                (img, icc, notes, format)
            }
        },
    )
}

fn image_is_bmp(path: &Path) -> bool {
    extension(path) == "bmp"
}

/// The picture of a decoded image; `bmp`: BMP palettes that are all gray count as grayscale.
fn picture_from(img: DynamicImage, icc: Option<Vec<u8>>, notes: Vec<String>, bmp: bool) -> Picture {
    let (width, height) = (img.width() as usize, img.height() as usize);
    // BMP palettes (1-, 4- and 8-bit) decode as RGB: a file whose every colour is gray is grayscale too.
    let gray = matches!(
        img.color(),
        ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16
    ) || (bmp
        && img.color() == ColorType::Rgb8
        && img
            .as_rgb8()
            .is_some_and(|b| b.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2])));
    let has_alpha = img.color().has_alpha();
    let depth = match img.color() {
        ColorType::L8 | ColorType::La8 | ColorType::Rgb8 | ColorType::Rgba8 => Depth::Eight,
        _ => Depth::Sixteen,
    };
    let (rgb, alpha): (Vec<f32>, Option<Vec<f32>>) = if depth == Depth::Eight {
        let buf = img.into_rgba8();
        let a = has_alpha.then(|| buf.pixels().map(|p| p.0[3] as f32 / 255.0).collect());
        let rgb = buf
            .pixels()
            .flat_map(|p| p.0[..3].iter().map(|&v| v as f32 / 255.0).collect::<Vec<_>>())
            .collect();
        (rgb, a)
    } else {
        let buf = match img {
            DynamicImage::ImageRgb32F(_) | DynamicImage::ImageRgba32F(_) => {
                let f = img.into_rgba32f();
                image::ImageBuffer::from_fn(f.width(), f.height(), |x, y| {
                    let p = f.get_pixel(x, y).0;
                    image::Rgba(p.map(|v| (v.clamp(0.0, 1.0) * 65535.0).round() as u16))
                })
            }
            other => other.into_rgba16(),
        };
        let a = has_alpha.then(|| buf.pixels().map(|p| p.0[3] as f32 / 65535.0).collect());
        let rgb = buf
            .pixels()
            .flat_map(|p| p.0[..3].iter().map(|&v| v as f32 / 65535.0).collect::<Vec<_>>())
            .collect();
        (rgb, a)
    };
    Picture {
        rgb: Image::from_raw(height, width, rgb),
        alpha,
        depth,
        gray,
        icc,
        notes,
    }
}

/// A stored profile over the limit (JPEG, WebP, TIFF: never larger than the file) dropped with a note.
fn limit_icc(icc: Option<Vec<u8>>) -> (Option<Vec<u8>>, Vec<String>) {
    match icc {
        Some(p) if p.len() > crate::icc::MAX_ICC_BYTES => (
            None,
            vec![crate::icc::dropped_note(&crate::icc::Dropped::Bytes(p.len()))],
        ),
        icc => (icc, vec![]),
    }
}

/// An image file's (height, width) from its header, where it is a regular file in a format the header says
/// (None otherwise: the read that follows reports what is wrong).
pub fn dimensions(path: &Path) -> Option<(u64, u64)> {
    if !std::fs::metadata(path).ok()?.is_file() || extension(path) == "npy" {
        return None;
    }
    let (w, h) = image::ImageReader::open(path)
        .ok()?
        .with_guessed_format()
        .ok()?
        .into_dimensions()
        .ok()?;
    Some((h as u64, w as u64))
}

/// Read an RGB image in [0, 1] (see `read_picture`).
pub fn read_image(path: &Path) -> Result<Image> {
    Ok(read_picture(path, DEFAULT_MAX_PIXELS)?.rgb)
}

/// A [`Error::TooLarge`] where `width` × `height` is over `max_pixels` (sizes whose product overflows are).
pub(crate) fn check_pixels(path: &Path, height: u64, width: u64, max_pixels: u64) -> Result<()> {
    match height.checked_mul(width) {
        Some(n) if n <= max_pixels => Ok(()),
        n => Err(Error::TooLarge {
            path: path.into(),
            msg: format!(
                "{width}x{height} is {} pixels, over the limit of {max_pixels} (--max-pixels)",
                n.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string())
            ),
        }),
    }
}

/// Decode with limits, apply the EXIF orientation, and return the ICC profile.
/// A PNG whose ICC profile expands past the limit is decoded without it (read into memory once, with that
/// chunk left out); a file that is not a regular file (a pipe) is read into memory first.
fn decode(path: &Path, max_pixels: u64) -> Result<(DynamicImage, Option<Vec<u8>>, Vec<String>)> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let regular = file.metadata().map_err(|e| Error::io(path, e))?.is_file();
    if !regular
        || crate::icc::oversized_png_profile(&mut file)
            .map_err(|e| Error::io(path, e))?
            .is_some()
    {
        let mut bytes = vec![];
        file.read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
        return decode_bytes(&bytes, path, max_pixels).map(|(img, icc, notes, _)| (img, icc, notes));
    }
    let reader = image::ImageReader::new(std::io::BufReader::new(file));
    let (img, icc, _) = decode_from(reader, path, max_pixels)?;
    let (icc, notes) = limit_icc(icc);
    Ok((img, icc, notes))
}

/// Decode from any reader (`label` names the source in errors); also returns the detected format.
fn decode_from<R: std::io::BufRead + std::io::Seek>(
    reader: image::ImageReader<R>,
    label: &Path,
    max_pixels: u64,
) -> Result<(DynamicImage, Option<Vec<u8>>, image::ImageFormat)> {
    let mut reader = reader.with_guessed_format().map_err(|e| Error::io(label, e))?;
    let Some(format) = reader.format() else {
        return Err(Error::input(
            label,
            "not an image in a supported format (PNG, JPEG, WebP, TIFF, BMP)",
        ));
    };
    let mut limits = image::Limits::default();
    // 16 bytes per pixel covers every decoded layout (RGBA f32); never more than the process can still
    // allocate, so a decode that would not fit is an error for that image, not an abort of the process.
    let room = crate::memory::room().unwrap_or(u64::MAX);
    limits.max_alloc = Some(max_pixels.saturating_mul(16).max(1 << 20).min(room));
    reader.limits(limits);
    let bad = |e: image::ImageError| Error::input(label, format!("cannot decode image: {e}"));
    let mut decoder = reader.into_decoder().map_err(bad)?;
    let (w, h) = decoder.dimensions();
    check_pixels(label, h as u64, w as u64, max_pixels)?;
    let icc = decoder.icc_profile().ok().flatten();
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(bad)?;
    img.apply_orientation(orientation);
    Ok((img, icc, format))
}

fn read_npy_image(path: &Path) -> Result<Image> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let arr = Array3::<f32>::read_npy(std::io::BufReader::new(file))
        .map_err(|e| Error::input(path, format!("expected a float32 H×W×3 .npy: {e}")))?;
    let (h, w, c) = arr.dim();
    if c != 3 || h == 0 || w == 0 {
        return Err(Error::input(path, format!("expected H×W×3, found {h}×{w}×{c}")));
    }
    if let Some(v) = arr.iter().find(|v| !v.is_finite() || **v < 0.0 || **v > 1.0) {
        return Err(Error::input(path, format!("values must lie in [0, 1] (found {v})")));
    }
    Ok(Image::from_raw(h, w, arr.iter().copied().collect()))
}

/// Read an inpainting mask: any non-zero pixel is a hole (1), as the official predict script binarises it.
/// Masks over `max_pixels` are refused, images from their header before decoding.
pub fn read_mask(path: &Path, max_pixels: u64) -> Result<Mask> {
    let (height, width, data) = if extension(path) == "npy" {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let arr = Array2::<f32>::read_npy(std::io::BufReader::new(file))
            .map_err(|e| Error::input(path, format!("expected a float32 H×W .npy mask: {e}")))?;
        let (h, w) = arr.dim();
        check_pixels(path, h as u64, w as u64, max_pixels)?;
        (h, w, arr.iter().map(|&v| if v > 0.0 { 1.0 } else { 0.0 }).collect())
    } else {
        return Ok(mask_from(decode(path, max_pixels)?.0));
    };
    Ok(Mask { height, width, data })
}

/// An inpainting mask from an encoded image in memory (any non-zero pixel is a hole).
pub fn decode_mask(bytes: &[u8], label: &Path, max_pixels: u64) -> Result<Mask> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes));
    Ok(mask_from(decode_from(reader, label, max_pixels)?.0))
}

fn mask_from(img: DynamicImage) -> Mask {
    let img = img.into_luma16();
    let (w, h) = img.dimensions();
    Mask {
        height: h as usize,
        width: w as usize,
        data: img
            .into_raw()
            .into_iter()
            .map(|v| if v > 0 { 1.0 } else { 0.0 })
            .collect(),
    }
}

/// Read an initial-noise file: float32 .npy of shape (1, D) or (D,).
pub fn read_noise(path: &Path, dim: usize) -> Result<Vec<f32>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let values: Vec<f32> = match Array2::<f32>::read_npy(&bytes[..]) {
        Ok(a) if a.nrows() == 1 => a.iter().copied().collect(),
        Ok(a) => {
            return Err(Error::input(
                path,
                format!("noise must have shape 1×{dim}, found {}×{}", a.nrows(), a.ncols()),
            ))
        }
        Err(_) => ndarray::Array1::<f32>::read_npy(&bytes[..])
            .map_err(|e| Error::input(path, format!("expected a float32 .npy of shape 1×{dim}: {e}")))?
            .to_vec(),
    };
    if values.len() != dim {
        return Err(Error::input(
            path,
            format!("noise has {} values; the model needs 1×{dim}", values.len()),
        ));
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(Error::input(path, "noise contains NaN or infinity"));
    }
    Ok(values)
}
