//! Writing results: the output formats, what a result carries over from its input (alpha, 16 bits, gray,
//! ICC), resizing, and the atomic write (a temporary file renamed into place).

use std::io::Write;
use std::path::{Path, PathBuf};

use image::{ExtendedColorType, ImageEncoder};
use ndarray::Array3;
use ndarray_npy::WriteNpyExt;

use crate::error::{Error, Result};
use crate::preprocess::{Image, Quantize};

/// The JPEG quality of JPEG outputs unless asked otherwise.
pub const DEFAULT_JPEG_QUALITY: u8 = 95;

/// A path's extension in lower case ("" where it has none).
pub(super) fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The image formats read and written, chosen by extension (or named by `--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// PNG (8 or 16 bits, alpha, ICC).
    Png,
    /// JPEG (8 bits, ICC).
    Jpeg,
    /// WebP (lossless, alpha).
    Webp,
    /// TIFF (8 or 16 bits, alpha).
    Tiff,
    /// BMP (8 bits).
    Bmp,
    /// Float32 H×W×3 NumPy array.
    Npy,
}

impl OutputFormat {
    /// Every format with its extensions, the first being the one written and the name `--format` takes:
    /// the one definition of the formats and their names.
    pub const TABLE: [(OutputFormat, &'static [&'static str]); 6] = [
        (OutputFormat::Png, &["png"]),
        (OutputFormat::Jpeg, &["jpg", "jpeg"]),
        (OutputFormat::Webp, &["webp"]),
        (OutputFormat::Tiff, &["tif", "tiff"]),
        (OutputFormat::Bmp, &["bmp"]),
        (OutputFormat::Npy, &["npy"]),
    ];

    /// Every extension of every format, e.g. for a command line's list of possible values.
    pub fn all_extensions() -> impl Iterator<Item = &'static str> {
        Self::TABLE.iter().flat_map(|(_, e)| e.iter().copied())
    }

    /// The format of a (lower-case) extension.
    pub fn from_extension(ext: &str) -> Option<OutputFormat> {
        Self::TABLE.iter().find(|(_, e)| e.contains(&ext)).map(|(f, _)| *f)
    }

    /// The extension written for this format.
    pub fn extension(self) -> &'static str {
        Self::TABLE
            .iter()
            .find(|(f, _)| *f == self)
            .map_or("png", |(_, e)| e[0])
    }

    /// Refuse, before any work, an output that cannot hold what the input carries (alpha in a JPEG or a
    /// .npy; a .npy always holds the float RGB result, H×W×3, also for grayscale inputs).
    pub fn check_can_hold(self, path: &Path, alpha: bool) -> Result<()> {
        let what = match self {
            OutputFormat::Jpeg => "JPEG",
            OutputFormat::Npy => "a .npy output (float RGB only)",
            _ => return Ok(()),
        };
        if alpha {
            return Err(Error::input(
                path,
                format!("{what} cannot hold the input's alpha channel; write .png, .webp or .tif"),
            ));
        }
        Ok(())
    }

    /// The format of a path's extension; an unknown one is an error naming the path and the known ones.
    pub fn from_path(path: &Path) -> Result<OutputFormat> {
        let ext = extension(path);
        OutputFormat::from_extension(&ext).ok_or_else(|| {
            let known: Vec<String> = Self::all_extensions().map(|e| format!(".{e}")).collect();
            Error::input(
                path,
                format!("unknown output extension '{ext}' (use {})", known.join(", ")),
            )
        })
    }
}

/// How results are written.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// How floats become 8-bit.
    pub quantize: Quantize,
    /// JPEG quality, 1–100.
    pub jpeg_quality: u8,
    /// Replace an existing file.
    pub overwrite: bool,
}

/// What travels from the input to the output besides the restored RGB.
#[derive(Debug, Clone, Default)]
pub struct Carry<'a> {
    /// Alpha at output size, in [0, 1].
    pub alpha: Option<&'a [f32]>,
    /// Write 16-bit samples (PNG, TIFF).
    pub sixteen_bit: bool,
    /// Write grayscale (BT.601 luma of the result).
    pub gray: bool,
    /// ICC profile bytes to embed.
    pub icc: Option<&'a [u8]>,
}

/// Write `image` to `path` (format from the extension) atomically: a temporary file in the target folder,
/// then a rename. An existing file is replaced only with `overwrite`; on error nothing is left behind.
pub fn write_image(path: &Path, image: &Image, quantize: Quantize, overwrite: bool) -> Result<()> {
    let opts = WriteOptions {
        quantize,
        jpeg_quality: DEFAULT_JPEG_QUALITY,
        overwrite,
    };
    write_picture(path, image, &Carry::default(), &opts)
}

/// Write a result with what it carries from its input (alpha, bit depth, grayscale, ICC profile).
pub fn write_picture(path: &Path, image: &Image, carry: &Carry<'_>, opts: &WriteOptions) -> Result<()> {
    let format = OutputFormat::from_path(path)?;
    if !opts.overwrite && path.exists() {
        return Err(Error::Exists { path: path.into() });
    }
    check_carry(path, image, carry, format)?;
    write_encoded(path, opts.overwrite, |file| {
        encode_into(file, image, carry, opts, format)
    })
}

/// Encode a result in memory, as `write_picture` writes it to a file (the same bytes).
pub fn encode_picture(image: &Image, carry: &Carry<'_>, opts: &WriteOptions, format: OutputFormat) -> Result<Vec<u8>> {
    let label = Path::new("(in memory)");
    check_carry(label, image, carry, format)?;
    let mut out = std::io::Cursor::new(Vec::new());
    encode_into(&mut out, image, carry, opts, format).map_err(|msg| Error::input(label, msg))?;
    Ok(out.into_inner())
}

fn check_carry(path: &Path, image: &Image, carry: &Carry<'_>, format: OutputFormat) -> Result<()> {
    super::samples::check_alpha(image, carry)?;
    if carry.alpha.is_some() {
        format.check_can_hold(path, true)?;
    }
    Ok(())
}

fn encode_into<W: Write + std::io::Seek>(
    file: &mut W,
    image: &Image,
    carry: &Carry<'_>,
    opts: &WriteOptions,
    format: OutputFormat,
) -> std::result::Result<(), String> {
    let (w, h) = (image.width as u32, image.height as u32);
    let channels = super::samples::channels(carry);
    let sixteen = carry.sixteen_bit && matches!(format, OutputFormat::Png | OutputFormat::Tiff);
    let samples = |range: std::ops::Range<usize>| super::samples::interleaved(image, carry, range);
    let to_u16 = |v: f32| <u16 as super::samples::Sample>::from_unit(v, opts.quantize);
    {
        if format == OutputFormat::Npy {
            let arr = Array3::from_shape_vec((image.height, image.width, 3), image.data.clone())
                .map_err(|e| e.to_string())?;
            return arr.write_npy(file).map_err(|e| e.to_string());
        }
        if format == OutputFormat::Png {
            // Streamed row by row: no second full-size copy of a large result.
            let mut info = png::Info::with_size(w, h);
            info.color_type = [
                png::ColorType::Grayscale,
                png::ColorType::GrayscaleAlpha,
                png::ColorType::Rgb,
            ]
            .get(channels - 1)
            .copied()
            .unwrap_or(png::ColorType::Rgba);
            info.bit_depth = if sixteen {
                png::BitDepth::Sixteen
            } else {
                png::BitDepth::Eight
            };
            info.icc_profile = carry.icc.map(|p| std::borrow::Cow::Owned(p.to_vec()));
            let enc = png::Encoder::with_info(file, info).map_err(|e| e.to_string())?;
            let mut writer = enc.write_header().map_err(|e| e.to_string())?;
            let mut stream = writer.stream_writer().map_err(|e| e.to_string())?;
            let mut row = Vec::with_capacity(image.width * channels * 2);
            for y in 0..image.height {
                row.clear();
                let px = samples(y * image.width..(y + 1) * image.width);
                if sixteen {
                    px.for_each(|v| row.extend(to_u16(v).to_be_bytes()));
                } else {
                    row.extend(px.map(|v| opts.quantize.to_u8(v)));
                }
                stream.write_all(&row).map_err(|e| e.to_string())?;
            }
            return stream.finish().map_err(|e| e.to_string());
        }
        let all = samples(0..image.height * image.width);
        let bytes: Vec<u8> = if sixteen {
            all.flat_map(|v| to_u16(v).to_ne_bytes()).collect()
        } else {
            all.map(|v| opts.quantize.to_u8(v)).collect()
        };
        let color = match (channels, sixteen) {
            (1, false) => ExtendedColorType::L8,
            (2, false) => ExtendedColorType::La8,
            (3, false) => ExtendedColorType::Rgb8,
            (4, false) => ExtendedColorType::Rgba8,
            (1, true) => ExtendedColorType::L16,
            (2, true) => ExtendedColorType::La16,
            (3, true) => ExtendedColorType::Rgb16,
            _ => ExtendedColorType::Rgba16,
        };
        let mut encoder: Box<dyn ImageEncoderDyn> = match format {
            OutputFormat::Jpeg => Box::new(image::codecs::jpeg::JpegEncoder::new_with_quality(
                file,
                opts.jpeg_quality.clamp(1, 100),
            )),
            OutputFormat::Webp => Box::new(image::codecs::webp::WebPEncoder::new_lossless(file)),
            OutputFormat::Tiff => Box::new(image::codecs::tiff::TiffEncoder::new(file)),
            _ => Box::new(image::codecs::bmp::BmpEncoder::new(file)),
        };
        if let Some(icc) = carry.icc {
            // Formats that cannot hold a profile (BMP) simply go without.
            let _ = encoder.set_icc(icc.to_vec());
        }
        encoder
            .encode(&bytes, w, h, color)
            .map_err(|e| format!("cannot encode: {e}"))
    }
}

/// Object-safe wrapper over the `image` encoders (they consume themselves on write).
trait ImageEncoderDyn {
    fn set_icc(&mut self, icc: Vec<u8>) -> std::result::Result<(), image::error::UnsupportedError>;
    fn encode(self: Box<Self>, buf: &[u8], w: u32, h: u32, color: ExtendedColorType) -> image::ImageResult<()>;
}

impl<E: ImageEncoder> ImageEncoderDyn for E {
    fn set_icc(&mut self, icc: Vec<u8>) -> std::result::Result<(), image::error::UnsupportedError> {
        self.set_icc_profile(icc)
    }
    fn encode(self: Box<Self>, buf: &[u8], w: u32, h: u32, color: ExtendedColorType) -> image::ImageResult<()> {
        (*self).write_image(buf, w, h, color)
    }
}

/// Resize an alpha channel to `out_h × out_w` with Catmull-Rom resampling, clamped to [0, 1].
pub fn resize_alpha(alpha: &[f32], height: usize, width: usize, out_h: usize, out_w: usize) -> Vec<f32> {
    if (out_h, out_w) == (height, width) {
        return alpha.to_vec();
    }
    let buf = image::ImageBuffer::<image::Luma<f32>, Vec<f32>>::from_raw(width as u32, height as u32, alpha.to_vec())
        .expect("alpha size");
    let up = image::imageops::resize(
        &buf,
        out_w as u32,
        out_h as u32,
        image::imageops::FilterType::CatmullRom,
    );
    up.into_raw().into_iter().map(|v| v.clamp(0.0, 1.0)).collect()
}

/// Resize an RGB result to `out_h × out_w` with Lanczos (a = 3) resampling, clamped to [0, 1]
/// (`--outscale`).
pub fn resize_image(img: &Image, out_h: usize, out_w: usize) -> Image {
    if (out_h, out_w) == (img.height, img.width) {
        return img.clone();
    }
    let buf = image::ImageBuffer::<image::Rgb<f32>, Vec<f32>>::from_raw(
        img.width as u32,
        img.height as u32,
        img.data.clone(),
    )
    .expect("image size");
    let out = image::imageops::resize(&buf, out_w as u32, out_h as u32, image::imageops::FilterType::Lanczos3);
    Image::from_raw(
        out_h,
        out_w,
        out.into_raw().into_iter().map(|v| v.clamp(0.0, 1.0)).collect(),
    )
}

/// Stream an encoder's output into a temporary file in the target folder, then rename it into place.
fn write_encoded(
    path: &Path,
    overwrite: bool,
    encode: impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> std::result::Result<(), String>,
) -> Result<()> {
    write_atomically(path, overwrite, |w| encode(w).map_err(|msg| Error::input(path, msg)))
}

/// Write `path` through a temporary file next to it, renamed into place once `write` succeeded (and never
/// over an existing file unless `overwrite`): after an error nothing is left behind.
pub(crate) fn write_atomically<T>(
    path: &Path,
    overwrite: bool,
    write: impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> Result<T>,
) -> Result<T> {
    let tmp = temp_file_beside(path, ".tmp")?;
    let done = {
        let mut w = std::io::BufWriter::new(tmp.as_file());
        let done = write(&mut w)?;
        w.flush().map_err(|e| Error::io(path, e))?;
        done
    };
    persist(tmp, path, overwrite)?;
    Ok(done)
}

/// A hidden temporary file in `path`'s folder (created where missing), ending in `suffix`, with the
/// permissions a plain write of `path` gives; removed when dropped unless [`persist`]ed.
pub(crate) fn temp_file_beside(path: &Path, suffix: &str) -> Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".diffir-").suffix(suffix);
    // The permissions a plain file write gives: 0666 less the umask for a new file (the kernel applies the
    // umask to the mode given at creation), the replaced file's own mode on --overwrite.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_or(0o666, |m| m.permissions().mode() & 0o7777);
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    let tmp = builder.tempfile_in(&dir).map_err(|e| Error::io(&dir, e))?;
    #[cfg(unix)]
    if let Ok(m) = std::fs::metadata(path) {
        // An existing file's mode exactly, whatever the umask.
        tmp.as_file()
            .set_permissions(m.permissions())
            .map_err(|e| Error::io(path, e))?;
    }
    Ok(tmp)
}

/// A hidden folder of a new, unique name in `dir` (`prefix`…`suffix`), with a folder's usual permissions
/// (0777 less the umask) rather than a temporary folder's 0700; removed when dropped unless kept. What a run
/// writes in it is renamed into place once whole, so only folders this program created are ever removed.
pub(crate) fn temp_dir_in(dir: &Path, prefix: &str, suffix: &str) -> Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix).suffix(suffix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o777));
    }
    builder.tempdir_in(dir).map_err(|e| Error::io(dir, e))
}

/// Give a finished temporary file its name: synced, then renamed (never over an existing file unless
/// `overwrite`, which is then [`Error::Exists`]).
pub(crate) fn persist(tmp: tempfile::NamedTempFile, path: &Path, overwrite: bool) -> Result<()> {
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

#[cfg(test)]
mod format_tests {
    use super::*;
    use crate::image_io::{is_supported_input, Picture};

    /// A picture's alpha must have one value per pixel.
    #[test]
    fn pictures_check_their_alpha() {
        let rgb = || Image::new(2, 3, vec![0.5; 18]).unwrap();
        assert!(Picture::new(rgb(), Some(vec![1.0; 6])).is_ok());
        let e = Picture::new(rgb(), Some(vec![1.0; 5])).unwrap_err().to_string();
        assert!(e.contains("2x3") && e.contains("6") && e.contains("5"), "{e}");
    }

    #[test]
    fn every_extension_maps_to_its_format_and_back() {
        for (format, exts) in OutputFormat::TABLE {
            assert_eq!(format.extension(), exts[0]);
            for e in exts {
                assert_eq!(OutputFormat::from_extension(e), Some(format));
                let path = format!("a/b.{}", e.to_uppercase());
                assert_eq!(OutputFormat::from_path(Path::new(&path)).unwrap(), format);
                assert!(is_supported_input(Path::new(&path)));
            }
        }
        assert_eq!(OutputFormat::all_extensions().count(), 8);
        let e = OutputFormat::from_path(Path::new("x.gif")).unwrap_err().to_string();
        assert!(e.contains("x.gif") && e.contains(".webp"), "{e}");
    }
}
