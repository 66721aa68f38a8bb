//! Bytes to bytes: decode an encoded image from memory, restore it with the built-in model, and encode the
//! result in memory (PNG), keeping what the input carries (alpha, 16-bit, grayscale, ICC) as files do.
//!
//!     cargo run --release --example in_memory -- INPUT

use diffir::{Bundle, Carry, OutputFormat, Pipeline, RestoreOptions, WriteOptions};

fn main() -> Result<(), diffir::Error> {
    let Some(input) = std::env::args().nth(1) else {
        eprintln!("usage: in_memory INPUT");
        std::process::exit(2);
    };
    // Any source of bytes: a socket, a database, a video frame.
    let bytes = std::fs::read(&input).map_err(|e| diffir::Error::Io {
        path: input.clone().into(),
        source: e,
    })?;
    let pipeline = Pipeline::open(Bundle::builtin()?, &RestoreOptions::default())?;
    let (picture, format) = diffir::decode_picture(&bytes, input.as_ref(), 50_000_000)?;
    let finish = diffir::Finish::default();
    let done = pipeline.restore_picture(&picture, None, finish, &diffir::Control::default())?;
    let carry: Carry<'_> = done.carry(&picture);
    let write: WriteOptions = pipeline.write_options(false);
    let png = diffir::encode_picture(&done.image, &carry, &write, OutputFormat::Png)?;
    // A PNG starts with its signature; decode it back to check the size.
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let (back, _) = diffir::decode_picture(&png, "(result)".as_ref(), 1 << 40)?;
    let s = pipeline.bundle().scale();
    assert_eq!(
        (back.rgb.width, back.rgb.height),
        (picture.rgb.width * s, picture.rgb.height * s)
    );
    println!(
        "{input}: {format:?} {}x{} ({} bytes) -> PNG {}x{} ({} bytes)",
        picture.rgb.width,
        picture.rgb.height,
        bytes.len(),
        back.rgb.width,
        back.rgb.height,
        png.len()
    );
    Ok(())
}
