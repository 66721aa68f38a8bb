//! Reading inputs (images, masks, .npy) and writing results atomically, by file extension.

use std::io::Write;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageFormat};
use ndarray::{Array2, Array3};
use ndarray_npy::{ReadNpyExt, WriteNpyExt};

use crate::error::{Error, Result};
use crate::preprocess::{Image, Mask, Quantize};

/// Extensions read as images in folder inputs.
pub const IMAGE_EXTENSIONS: [&str; 8] = ["png", "jpg", "jpeg", "webp", "tif", "tiff", "bmp", "npy"];

fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Whether a path names a file this tool reads.
pub fn is_supported_input(path: &Path) -> bool {
    IMAGE_EXTENSIONS.contains(&extension(path).as_str())
}

/// Read an RGB image in [0, 1]. 8-bit files are divided by 255 exactly like the official loaders; a `.npy`
/// must hold float32 H×W×3 in [0, 1].
pub fn read_image(path: &Path) -> Result<Image> {
    if extension(path) == "npy" {
        return read_npy_image(path);
    }
    let img = decode(path)?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let data: Vec<f32> = match img {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageRgb8(_)
        | DynamicImage::ImageRgba8(_) => img
            .into_rgb8()
            .into_raw()
            .into_iter()
            .map(|v| v as f32 / 255.0)
            .collect(),
        DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_)
        | DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageRgba16(_) => img
            .into_rgb16()
            .into_raw()
            .into_iter()
            .map(|v| v as f32 / 65535.0)
            .collect(),
        other => other
            .into_rgb32f()
            .into_raw()
            .into_iter()
            .map(|v| v.clamp(0.0, 1.0))
            .collect(),
    };
    Ok(Image::new(height, width, data))
}

fn decode(path: &Path) -> Result<DynamicImage> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    reader
        .decode()
        .map_err(|e| Error::input(path, format!("cannot decode image: {e}")))
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
    Ok(Image::new(h, w, arr.iter().copied().collect()))
}

/// Read an inpainting mask: any non-zero pixel is a hole (1), as the official predict script binarises it.
pub fn read_mask(path: &Path) -> Result<Mask> {
    let (height, width, data) = if extension(path) == "npy" {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let arr = Array2::<f32>::read_npy(std::io::BufReader::new(file))
            .map_err(|e| Error::input(path, format!("expected a float32 H×W .npy mask: {e}")))?;
        let (h, w) = arr.dim();
        (h, w, arr.iter().map(|&v| if v > 0.0 { 1.0 } else { 0.0 }).collect())
    } else {
        let img = decode(path)?.into_luma16();
        let (w, h) = img.dimensions();
        (
            h as usize,
            w as usize,
            img.into_raw()
                .into_iter()
                .map(|v| if v > 0 { 1.0 } else { 0.0 })
                .collect(),
        )
    };
    Ok(Mask { height, width, data })
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

/// Output formats, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Png,
    Jpeg,
    Webp,
    Tiff,
    Npy,
}

impl OutputFormat {
    pub fn from_path(path: &Path) -> Result<OutputFormat> {
        Ok(match extension(path).as_str() {
            "png" => OutputFormat::Png,
            "jpg" | "jpeg" => OutputFormat::Jpeg,
            "webp" => OutputFormat::Webp,
            "tif" | "tiff" => OutputFormat::Tiff,
            "npy" => OutputFormat::Npy,
            other => {
                return Err(Error::input(
                    path,
                    format!("unknown output extension '{other}' (use .png, .jpg, .webp, .tif or .npy)"),
                ))
            }
        })
    }
}

/// Write `image` to `path` (format from the extension) atomically: a temporary file in the target folder,
/// then a rename. An existing file is replaced only with `overwrite`; on error nothing is left behind.
pub fn write_image(path: &Path, image: &Image, quantize: Quantize, overwrite: bool) -> Result<()> {
    let format = OutputFormat::from_path(path)?;
    if !overwrite && path.exists() {
        return Err(Error::Exists { path: path.into() });
    }
    let mut buf: Vec<u8> = Vec::new();
    match format {
        OutputFormat::Npy => {
            let arr = Array3::from_shape_vec((image.height, image.width, 3), image.data.clone())
                .map_err(|e| Error::input(path, e.to_string()))?;
            arr.write_npy(&mut buf).map_err(|e| Error::input(path, e.to_string()))?;
        }
        _ => {
            let raw: Vec<u8> = image.data.iter().map(|&v| quantize.to_u8(v)).collect();
            let rgb = image::RgbImage::from_raw(image.width as u32, image.height as u32, raw)
                .ok_or_else(|| Error::input(path, "image buffer size"))?;
            let fmt = match format {
                OutputFormat::Png => ImageFormat::Png,
                OutputFormat::Jpeg => ImageFormat::Jpeg,
                OutputFormat::Webp => ImageFormat::WebP,
                _ => ImageFormat::Tiff,
            };
            DynamicImage::ImageRgb8(rgb)
                .write_to(&mut std::io::Cursor::new(&mut buf), fmt)
                .map_err(|e| Error::input(path, format!("cannot encode: {e}")))?;
        }
    }
    write_atomic(path, &buf, overwrite)
}

/// Write bytes through a temporary file in the same folder and rename it into place.
pub fn write_atomic(path: &Path, bytes: &[u8], overwrite: bool) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".diffir-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|e| Error::io(&dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    if overwrite {
        tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    } else {
        tmp.persist_noclobber(path).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Exists { path: path.into() }
            } else {
                Error::io(path, e.error)
            }
        })?;
    }
    Ok(())
}
