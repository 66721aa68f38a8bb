//! The size limit of ICC colour profiles. A PNG keeps its profile compressed, so a 1 MB file can carry a
//! profile that expands to a gigabyte (and is then written into the output); real profiles are a few
//! hundred kilobytes at most. A profile over [`MAX_ICC_BYTES`] is dropped before decoding, with a note,
//! the same way for files and request bodies.

use std::io::{Read, Seek, SeekFrom};

/// The largest ICC profile carried from an input to its output (4 MiB).
pub const MAX_ICC_BYTES: usize = 4 << 20;

/// The note for a dropped profile.
pub fn dropped_note(size: &Dropped) -> String {
    match size {
        Dropped::Over => format!(
            "its ICC profile expands past {} MiB and was dropped (the output has none)",
            MAX_ICC_BYTES >> 20
        ),
        Dropped::Bytes(n) => format!(
            "its ICC profile ({n} bytes) is over {} MiB and was dropped (the output has none)",
            MAX_ICC_BYTES >> 20
        ),
    }
}

/// How big a dropped profile was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// A compressed profile that expands past the limit (not expanded further).
    Over,
    /// A stored profile of this many bytes.
    Bytes(usize),
}

/// Where a PNG's iCCP chunk lies (byte range of the whole chunk) when its profile expands past
/// [`MAX_ICC_BYTES`]; None for other files, PNGs without one, and profiles within the limit. Only the
/// chunk headers before the image data are read, and the profile is expanded no further than the limit.
/// The reader is left at its start.
pub fn oversized_png_profile<R: Read + Seek>(r: &mut R) -> std::io::Result<Option<(u64, u64)>> {
    let found = scan(r);
    r.seek(SeekFrom::Start(0))?;
    found
}

fn scan<R: Read + Seek>(r: &mut R) -> std::io::Result<Option<(u64, u64)>> {
    const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    let mut sig = [0u8; 8];
    if r.read_exact(&mut sig).is_err() || sig != SIGNATURE {
        return Ok(None);
    }
    let mut at = 8u64;
    loop {
        let mut head = [0u8; 8];
        if r.read_exact(&mut head).is_err() {
            return Ok(None);
        }
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as u64;
        let kind = &head[4..8];
        if kind == b"IDAT" || kind == b"IEND" {
            return Ok(None);
        }
        let end = at + 8 + len + 4;
        if kind == b"iCCP" {
            let mut data = vec![];
            r.by_ref().take(len).read_to_end(&mut data)?;
            // Keyword, NUL, compression method, then the zlib stream.
            let Some(nul) = data.iter().position(|&b| b == 0) else {
                return Ok(None);
            };
            let stream = data.get(nul + 2..).unwrap_or_default();
            return Ok(match fdeflate::decompress_to_vec_bounded(stream, MAX_ICC_BYTES) {
                Err(fdeflate::BoundedDecompressionError::OutputTooLarge { .. }) => Some((at, end)),
                _ => None,
            });
        }
        r.seek(SeekFrom::Start(end))?;
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_with_profile(profile: &[u8]) -> Vec<u8> {
        let mut out = vec![];
        {
            let mut info = png::Info::with_size(2, 2);
            info.icc_profile = Some(profile.to_vec().into());
            let mut enc = png::Encoder::with_info(&mut out, info).unwrap();
            enc.set_color(png::ColorType::Rgb);
            enc.write_header().unwrap().write_image_data(&[7u8; 12]).unwrap();
        }
        out
    }

    #[test]
    fn a_profile_over_the_limit_is_found_and_one_within_it_is_not() {
        let big = png_with_profile(&vec![0u8; MAX_ICC_BYTES + 1]);
        assert!(big.len() < 64 << 10, "the profile compresses: {} bytes", big.len());
        let (start, end) = oversized_png_profile(&mut std::io::Cursor::new(&big)).unwrap().unwrap();
        assert_eq!(&big[start as usize + 4..start as usize + 8], b"iCCP");
        assert!(end as usize <= big.len());
        let small = png_with_profile(&vec![0u8; MAX_ICC_BYTES]);
        assert_eq!(oversized_png_profile(&mut std::io::Cursor::new(&small)).unwrap(), None);
        assert_eq!(
            oversized_png_profile(&mut std::io::Cursor::new(b"not a png")).unwrap(),
            None
        );
    }
}
