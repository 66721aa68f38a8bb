//! `diffir restore` with `-`: one image from standard input or to standard output, and nothing else on
//! standard output.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use super::args::RestoreArgs;
use super::report::{error_line, BatchReport};
use crate::error::{Error, Result};
use crate::image_io;
use crate::options::RestoreOptions;
use crate::pipeline::Control;

/// `restore` with `-` as the input (one image from stdin) or as the output (to stdout, in `--format`):
/// one image, and nothing but the image on stdout.
pub(super) fn restore_stream(
    args: &RestoreArgs,
    bundle: crate::Bundle,
    options: &RestoreOptions,
    inputs: &[PathBuf],
    mask: Option<&crate::Mask>,
) -> Result<BatchReport> {
    use std::io::{Read, Write};
    let dash = Path::new("-");
    if inputs.len() != 1 {
        return Err(Error::input(
            dash,
            "'-' (standard input or output) takes exactly one input image",
        ));
    }
    let to_stdout = args.output.as_os_str() == "-";
    let format = args.format.as_deref().and_then(image_io::OutputFormat::from_extension);
    if to_stdout && format.is_none() {
        return Err(Error::input(
            dash,
            "-o - (standard output) needs --format (png, jpg, webp, tif or bmp)",
        ));
    }
    if to_stdout && std::io::stdout().is_terminal() {
        return Err(Error::input(
            dash,
            "standard output is a terminal; redirect it to a file or a pipe",
        ));
    }
    let input = &inputs[0];
    let from_stdin = input.as_os_str() == "-";
    let label = if from_stdin {
        PathBuf::from("<stdin>")
    } else {
        input.clone()
    };
    let picture = if from_stdin {
        let mut bytes = vec![];
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&label, e))?;
        if bytes.is_empty() {
            return Err(Error::input(&label, "standard input is empty"));
        }
        image_io::decode_picture(&bytes, &label, args.max_pixels)
    } else {
        image_io::read_picture(input, args.max_pixels).map(|p| {
            (
                p,
                image_io::OutputFormat::from_path(input).unwrap_or(image_io::OutputFormat::Png),
            )
        })
    };
    let pipeline = args.engine.open(bundle, options)?;
    let mut report = BatchReport::default();
    let run = || -> Result<()> {
        let (picture, decoded_format) = picture?;
        let output = if to_stdout {
            None
        } else if args.output.is_dir() {
            let ext = format.unwrap_or(decoded_format).extension();
            Some(
                args.output
                    .join(format!("stdin{}.{ext}", args.suffix.as_deref().unwrap_or(""))),
            )
        } else {
            Some(args.output.clone())
        };
        if let Some(out) = &output {
            if args.skip(out)? {
                return Ok(());
            }
        }
        let target = match (&output, format) {
            (Some(out), _) => image_io::OutputFormat::from_path(out)?,
            (None, Some(f)) => f,
            (None, None) => unreachable!("checked above"),
        };
        target.check_can_hold(output.as_deref().unwrap_or(dash), picture.alpha.is_some())?;
        let (h, w) = (picture.rgb.height as u64, picture.rgb.width as u64);
        pipeline.check_room(&label, h, w, args.finish())?;
        let control = Control {
            cancel: Some(crate::interrupt::install()),
            ..Control::default()
        };
        let done = pipeline.restore_picture(&picture, mask, args.finish(), &control)?;
        if !args.engine.quiet {
            for note in picture.notes.iter().chain(&done.restored.notes) {
                eprintln!("note: {}: {note}", crate::names::escaped(&label));
            }
        }
        let carry = done.carry(&picture);
        let write = pipeline.write_options(args.overwrite);
        match &output {
            Some(out) => image_io::write_picture(out, &done.image, &carry, &write),
            None => {
                let bytes = image_io::encode_picture(&done.image, &carry, &write, target)?;
                let mut stdout = std::io::stdout().lock();
                stdout
                    .write_all(&bytes)
                    .and_then(|()| stdout.flush())
                    .map_err(|e| Error::io(dash, e))
            }
        }
    };
    match run() {
        Ok(()) => report.done = 1,
        Err(Error::Cancelled) => report.interrupted = Some(1),
        Err(e) if e.is_model_error() => return Err(e),
        Err(e) => {
            eprintln!("{}", error_line(&label, &e));
            report.failed.push((label, e.to_string()));
        }
    }
    Ok(report)
}
