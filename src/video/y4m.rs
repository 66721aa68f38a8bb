//! YUV4MPEG2 streams in and out (`diffir restore - -o - --format y4m`): frame by frame, so memory stays
//! that of one frame; 4:2:0, 4:2:2, 4:4:4 and gray at 8 to 12 bits, in the range (`XCOLORRANGE`) and
//! matrix (`XCOLORMATRIX`, else guessed from the height) the header names. The stream syntax is the `y4m`
//! crate's; the colour conversion is `yuv.rs`.

use std::cell::Cell;
use std::io::{Read, Write};
use std::path::Path;
use std::rc::Rc;

use super::yuv::{self, Levels, Matrix, Planes, Subsampling};
use crate::error::{Error, Result};
use crate::image_io::{Depth, Picture};
use crate::pipeline::{Control, Finish, Pipeline};
use crate::preprocess::Image;

/// What a stream's header says about its pictures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Format {
    /// Chroma subsampling (None: gray, luma only).
    pub subsampling: Option<Subsampling>,
    /// Range and depth.
    pub levels: Levels,
    /// The Y'CbCr matrix.
    pub matrix: Matrix,
    /// Whether the matrix came from the header (else guessed from the height).
    pub matrix_named: bool,
}

/// The format of a header: its colour space tag, raw parameters (X tags) and height.
pub fn format_of(colorspace: y4m::Colorspace, raw_params: &[u8], height: usize) -> Result<Format> {
    use y4m::Colorspace as C;
    let sub = |x, y| Some(Subsampling { x, y });
    let subsampling = match colorspace {
        C::Cmono | C::Cmono12 => None,
        C::C420 | C::C420p10 | C::C420p12 | C::C420jpeg | C::C420paldv | C::C420mpeg2 => sub(2, 2),
        C::C422 | C::C422p10 | C::C422p12 => sub(2, 1),
        C::C444 | C::C444p10 | C::C444p12 => sub(1, 1),
        other => return Err(stream_error(format!("colour space {other:?} is not supported"))),
    };
    let mut full = false;
    let mut matrix = None;
    for tag in raw_params.split(|&b| b == b' ').filter_map(|t| t.strip_prefix(b"X")) {
        let text = String::from_utf8_lossy(tag);
        if let Some(v) = text.strip_prefix("COLORRANGE=") {
            full = match v {
                "FULL" => true,
                "LIMITED" => false,
                _ => return Err(stream_error(format!("XCOLORRANGE={v} (expected FULL or LIMITED)"))),
            };
        } else if let Some(v) = text.strip_prefix("COLORMATRIX=") {
            matrix = Some(
                Matrix::from_name(v)
                    .ok_or_else(|| stream_error(format!("XCOLORMATRIX={v} (expected BT601, BT709 or BT2020)")))?,
            );
        }
    }
    Ok(Format {
        subsampling,
        levels: Levels {
            full,
            bits: colorspace.get_bit_depth() as u32,
        },
        matrix: matrix.unwrap_or(Matrix::guess(height)),
        matrix_named: matrix.is_some(),
    })
}

fn stream_error(msg: impl Into<String>) -> Error {
    Error::input("<y4m stream>", msg)
}

/// Samples of a plane as stored (bytes at 8 bits, little-endian pairs above).
fn samples(bytes: &[u8], wide: bool) -> Vec<u16> {
    if wide {
        bytes
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect()
    } else {
        bytes.iter().map(|&b| b as u16).collect()
    }
}

/// A frame's planes as a picture (gray for luma-only streams).
pub fn frame_to_picture(frame: &y4m::Frame<'_>, height: usize, width: usize, f: &Format) -> Result<Picture> {
    let wide = f.levels.bits > 8;
    let y = samples(frame.get_y_plane(), wide);
    let (rgb, gray) = match f.subsampling {
        Some(s) => {
            let planes = Planes {
                y,
                cb: samples(frame.get_u_plane(), wide),
                cr: samples(frame.get_v_plane(), wide),
                height,
                width,
            };
            (yuv::planes_to_image(&planes, s, f.matrix, f.levels), false)
        }
        None => {
            let neutral = 1u16 << (f.levels.bits - 1);
            let n = y.len();
            let planes = Planes {
                y,
                cb: vec![neutral; n],
                cr: vec![neutral; n],
                height,
                width,
            };
            let one = Subsampling { x: 1, y: 1 };
            (yuv::planes_to_image(&planes, one, f.matrix, f.levels), true)
        }
    };
    let mut picture = Picture::new(rgb, None)?;
    picture.gray = gray;
    picture.depth = if wide { Depth::Sixteen } else { Depth::Eight };
    Ok(picture)
}

/// An image as one frame's planes in `f`'s layout (gray: luma only), as stored bytes.
pub fn image_to_frame_bytes(img: &Image, f: &Format) -> [Vec<u8>; 3] {
    let s = f.subsampling.unwrap_or(Subsampling { x: 1, y: 1 });
    let planes = yuv::image_to_planes(img, s, f.matrix, f.levels);
    let bytes = |v: &[u16]| -> Vec<u8> {
        if f.levels.bits > 8 {
            v.iter().flat_map(|x| x.to_le_bytes()).collect()
        } else {
            v.iter().map(|&x| x as u8).collect()
        }
    };
    match f.subsampling {
        Some(_) => [bytes(&planes.y), bytes(&planes.cb), bytes(&planes.cr)],
        None => [bytes(&planes.y), vec![], vec![]],
    }
}

/// What a stream restore did.
#[derive(Debug, Clone, Default)]
pub struct StreamReport {
    /// Frames restored and written.
    pub frames: usize,
    /// What the header did not say and was assumed, in words.
    pub notes: Vec<String>,
}

/// Restore every frame of the YUV4MPEG2 stream `input` into the stream `output`, one frame at a time, each
/// on its own as `diffir restore` restores a picture (its prior included), in the input's layout, depth,
/// range and matrix (written as XCOLORMATRIX), at the model's scale or `finish.outscale`. `on_frame` is
/// called after each written frame with the count so far.
pub fn restore_stream(
    pipeline: &Pipeline,
    input: impl Read,
    output: impl Write,
    finish: Finish,
    control: &Control<'_>,
    on_frame: &mut dyn FnMut(usize),
) -> Result<StreamReport> {
    let dash = Path::new("<y4m stream>");
    let cancelled = || control.cancelled();
    let mut input = input;
    // The header is read and its size checked here first: the crate would size (and allocate) a frame
    // from it, and a product past usize wraps there.
    let header = read_header(&mut input).map_err(|e| match e {
        _ if cancelled() => Error::Cancelled,
        e => Error::io(dash, e),
    })?;
    let frame_bytes = check_header(&header, pipeline.options().max_pixels)?;
    let read = Rc::new(Cell::new(0u64));
    let counted = Counted {
        inner: std::io::Cursor::new(header).chain(input),
        read: Rc::clone(&read),
    };
    let limits = y4m::Limits { bytes: frame_bytes };
    let mut decoder = y4m::Decoder::new_with_limits(counted, limits).map_err(|e| match e {
        _ if cancelled() => Error::Cancelled,
        y4m::Error::EOF => stream_error("the stream is empty or ends inside its header"),
        y4m::Error::IoError(e) => Error::io(dash, e),
        other => stream_error(format!("not a YUV4MPEG2 stream: {other}")),
    })?;
    let (h, w) = (decoder.get_height(), decoder.get_width());
    let raw = decoder.get_raw_params().to_vec();
    let format = format_of(decoder.get_colorspace(), &raw, h)?;
    let mut report = StreamReport::default();
    if !format.matrix_named {
        report.notes.push(format!(
            "the header names no matrix (XCOLORMATRIX): {} assumed for {h} lines",
            format.matrix.name()
        ));
    }
    if raw
        .split(|&b| b == b' ')
        .any(|t| t.len() > 1 && t[0] == b'I' && t[1] != b'p')
    {
        report
            .notes
            .push("the stream says it is interlaced; frames are restored as progressive pictures".into());
    }
    let mut encoder: Option<y4m::Encoder<_>> = None;
    let mut output = Some(output);
    loop {
        let before = read.get();
        let frame = match decoder.read_frame() {
            Ok(f) => f,
            Err(_) if cancelled() => return Err(Error::Cancelled),
            // The crate reads an end inside a frame as the end of the stream: bytes read since the last
            // frame tell the two apart.
            Err(y4m::Error::EOF) if read.get() > before => {
                return Err(stream_error(format!(
                    "frame {} is truncated: the stream ends {} bytes into it (a frame is {frame_bytes} bytes)",
                    report.frames + 1,
                    read.get() - before
                )))
            }
            Err(y4m::Error::EOF) => break,
            Err(y4m::Error::IoError(e)) => return Err(Error::io(dash, e)),
            Err(e) => {
                return Err(stream_error(format!(
                    "frame {}: {e} (a truncated or corrupt stream)",
                    report.frames + 1
                )))
            }
        };
        let picture = frame_to_picture(&frame, h, w, &format)?;
        let done = pipeline.restore_picture(&picture, None, finish, control)?;
        let (oh, ow) = (done.image.height, done.image.width);
        if encoder.is_none() {
            let mut builder = y4m::encode(ow, oh, decoder.get_framerate())
                .with_colorspace(decoder.get_colorspace())
                .with_pixel_aspect(decoder.get_pixel_aspect());
            for tag in raw.split(|&b| b == b' ').filter_map(|t| t.strip_prefix(b"X")) {
                if !tag.starts_with(b"COLORMATRIX=") {
                    builder = builder.append_vendor_extension(vendor(tag.to_vec())?);
                }
            }
            builder =
                builder.append_vendor_extension(vendor(format!("COLORMATRIX={}", format.matrix.name()).into_bytes())?);
            let out = output.take().expect("one header");
            encoder = Some(builder.write_header(out).map_err(|e| write_error(dash, e))?);
        }
        let planes = image_to_frame_bytes(&done.image, &format);
        let frame = y4m::Frame::new([&planes[0], &planes[1], &planes[2]], None);
        encoder
            .as_mut()
            .expect("written above")
            .write_frame(&frame)
            .map_err(|e| write_error(dash, e))?;
        report.frames += 1;
        on_frame(report.frames);
    }
    if report.frames == 0 {
        return Err(stream_error("the stream has a header but no frames"));
    }
    Ok(report)
}

/// The longest header line the crate reads (its own limit).
const MAX_HEADER: usize = 1024;

/// The stream's header line, its newline included, read a byte at a time (nothing past it is consumed).
fn read_header(input: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut header = Vec::with_capacity(64);
    let mut byte = [0u8];
    while header.len() < MAX_HEADER {
        if input.read(&mut byte)? == 0 {
            break;
        }
        header.push(byte[0]);
        if byte[0] == b'\n' {
            break;
        }
    }
    Ok(header)
}

/// The frame size in bytes of a header's W and H at up to 16 bits in 4:4:4 (an upper bound for every
/// layout), after the size is checked against `max_pixels`. A header without a readable size is left to
/// the crate to refuse.
fn check_header(header: &[u8], max_pixels: u64) -> Result<usize> {
    let field = |tag: u8| {
        header
            .trim_ascii_end()
            .split(|&b| b == b' ')
            .rfind(|f| f.first() == Some(&tag))
            .and_then(|f| std::str::from_utf8(&f[1..]).ok()?.parse::<u64>().ok())
    };
    let (Some(w), Some(h)) = (field(b'W'), field(b'H')) else {
        return Ok(usize::MAX);
    };
    crate::image_io::check_pixels(Path::new("<y4m stream>"), h, w, max_pixels)?;
    w.checked_mul(h)
        .and_then(|n| n.checked_mul(6))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| stream_error(format!("a {w}x{h} frame does not fit in memory")))
}

/// A reader that counts the bytes it gave.
struct Counted<R> {
    inner: R,
    read: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

fn vendor(tag: Vec<u8>) -> Result<y4m::VendorExtensionString> {
    y4m::VendorExtensionString::new(tag).map_err(|_| stream_error("a header tag with a space"))
}

fn write_error(path: &Path, e: y4m::Error) -> Error {
    match e {
        y4m::Error::IoError(e) => Error::io(path, e),
        other => Error::input(path, format!("cannot write the stream: {other}")),
    }
}
