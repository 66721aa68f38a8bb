//! Reading inputs (images, masks, .npy) and writing results atomically, by file extension.

use std::io::Write;
use std::path::{Path, PathBuf};

use image::{ColorType, DynamicImage, ExtendedColorType, ImageDecoder, ImageEncoder};
use ndarray::{Array2, Array3};
use ndarray_npy::{ReadNpyExt, WriteNpyExt};

use crate::error::{Error, Result};
use crate::preprocess::{Image, Mask, Quantize};

/// The JPEG quality of JPEG outputs unless asked otherwise.
pub const DEFAULT_JPEG_QUALITY: u8 = 95;

fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

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

/// Read an RGB image in [0, 1] (see `read_picture`).
pub fn read_image(path: &Path) -> Result<Image> {
    Ok(read_picture(path, DEFAULT_MAX_PIXELS)?.rgb)
}

fn check_pixels(path: &Path, height: u64, width: u64, max_pixels: u64) -> Result<()> {
    if height * width > max_pixels {
        return Err(Error::TooLarge {
            path: path.into(),
            msg: format!(
                "{width}x{height} is {} pixels, over the limit of {max_pixels} (--max-pixels)",
                width * height
            ),
        });
    }
    Ok(())
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
    // 16 bytes per pixel covers every decoded layout (RGBA f32).
    limits.max_alloc = Some(max_pixels.saturating_mul(16).max(1 << 20));
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
    if let Some(a) = carry.alpha {
        if a.len() != image.height * image.width {
            return Err(Error::Shape(format!(
                "alpha has {} values for a {}x{} image",
                a.len(),
                image.width,
                image.height
            )));
        }
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
    let channels = match (carry.gray, carry.alpha.is_some()) {
        (true, false) => 1,
        (true, true) => 2,
        (false, false) => 3,
        (false, true) => 4,
    };
    let sixteen = carry.sixteen_bit && matches!(format, OutputFormat::Png | OutputFormat::Tiff);
    let luma = |px: &[f32]| 0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2];
    // Interleaved output samples in [0, 1] of pixels `range`.
    let samples = |range: std::ops::Range<usize>| {
        image.data[range.start * 3..range.end * 3]
            .chunks_exact(3)
            .zip(range)
            .flat_map(move |(px, i)| {
                let mut v: [f32; 4] = [0.0; 4];
                let n = if carry.gray {
                    v[0] = luma(px);
                    1
                } else {
                    v[..3].copy_from_slice(px);
                    3
                };
                if let Some(a) = carry.alpha {
                    v[n] = a[i];
                }
                v.into_iter().take(channels)
            })
    };
    let to_u16 = |v: f32| (v.clamp(0.0, 1.0) * 65535.0).round() as u16;
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

/// Upscale an alpha channel by an integer factor with Catmull-Rom (bicubic) resampling, clamped to [0, 1]:
/// smooth edges without the blockiness of pixel replication.
pub fn upscale_alpha(alpha: &[f32], height: usize, width: usize, scale: usize) -> Vec<f32> {
    resize_alpha(alpha, height, width, height * scale, width * scale)
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
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".diffir-").suffix(".tmp");
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
    {
        let mut w = std::io::BufWriter::new(tmp.as_file());
        encode(&mut w).map_err(|msg| Error::input(path, msg))?;
        w.flush().map_err(|e| Error::io(path, e))?;
    }
    persist(tmp, path, overwrite)
}

fn persist(tmp: tempfile::NamedTempFile, path: &Path, overwrite: bool) -> Result<()> {
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
