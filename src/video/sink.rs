//! Where restored frames go: an ffmpeg child process encoding raw RGB from its standard input (the other
//! streams copied from the source, the colour tags kept), or numbered PNG files in a folder. Both write
//! under a temporary name next to the output and take the output's name only once everything is written,
//! so an interrupted or failed run leaves no output behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};

use super::command::{encoder_args, encoder_filters, Encoding, Filters, Target};
use super::tools::{Running, Tool};
use crate::error::{Error, Result};
use crate::image_io::{self, Carry, WriteOptions};
use crate::preprocess::{Image, Quantize};

/// Restored frames on their way out.
pub enum Sink {
    /// An ffmpeg encoder reading raw frames on its standard input.
    Encoder {
        /// The child.
        child: Running,
        /// Its standard input.
        stdin: ChildStdin,
        /// The file it writes, removed unless finished.
        temp: tempfile::NamedTempFile,
        /// The filter script (variable frame rates), removed when dropped.
        script: Option<tempfile::NamedTempFile>,
        /// The output.
        output: PathBuf,
        /// 16-bit frames.
        deep: bool,
        /// Frames written.
        written: u64,
    },
    /// PNG files in a folder.
    Folder {
        /// The folder written, removed unless finished.
        temp: tempfile::TempDir,
        /// The output folder.
        output: PathBuf,
        /// Frames written.
        written: usize,
        /// 16-bit frames.
        deep: bool,
    },
}

impl Sink {
    /// Start an encoder writing `output` (in the container its extension names).
    pub fn encoder(t: &Target<'_>, enc: &Encoding, output: &Path) -> Result<Sink> {
        let ext = output
            .extension()
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = image_io::temp_file_beside(output, &format!(".partial.{ext}"))?;
        let filters = encoder_filters(t, enc);
        // A variable frame rate's timestamp table can be long: the filters then go in a script file.
        let script = match t.timestamps {
            Some(_) => {
                let mut f = image_io::temp_file_beside(output, ".filters.txt")?;
                f.write_all(filters.as_bytes()).map_err(|e| Error::io(f.path(), e))?;
                Some(f)
            }
            None => None,
        };
        let filters = match &script {
            Some(f) => Filters::Script(f.path()),
            None => Filters::Inline(&filters),
        };
        let mut command = Tool::Ffmpeg.command()?;
        command.args(encoder_args(t, enc, temp.path(), filters));
        let mut child = Tool::Ffmpeg.spawn(command, Stdio::piped(), Stdio::null())?;
        let stdin = child.take_stdin().expect("piped");
        Ok(Sink::Encoder {
            child,
            stdin,
            temp,
            script,
            output: output.to_path_buf(),
            deep: t.deep,
            written: 0,
        })
    }

    /// Start writing numbered PNG frames into the folder `output`.
    pub fn folder(output: &Path, deep: bool) -> Result<Sink> {
        let dir = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let temp = image_io::temp_dir_in(&dir, ".diffir-", ".partial")?;
        Ok(Sink::Folder {
            temp,
            output: output.to_path_buf(),
            written: 0,
            deep,
        })
    }

    /// Write the next frame.
    pub fn write(&mut self, image: &Image, quantize: Quantize) -> Result<()> {
        match self {
            Sink::Encoder {
                child,
                stdin,
                deep,
                written,
                ..
            } => {
                *written += 1;
                let carry = Carry::default();
                let bytes: Vec<u8> = if *deep {
                    image_io::to_samples::<u16>(image, &carry, quantize)?
                        .into_iter()
                        .flat_map(u16::to_le_bytes)
                        .collect()
                } else {
                    image_io::to_samples::<u8>(image, &carry, quantize)?
                };
                stdin.write_all(&bytes).or_else(|e| {
                    // The encoder stopped early: its own message says why.
                    child.finish("the encoder stopped")?;
                    Err(Tool::Ffmpeg.failed(&format!("the encoder stopped reading: {e}")))
                })
            }
            Sink::Folder {
                temp, written, deep, ..
            } => {
                *written += 1;
                let path = temp.path().join(format!("frame_{:06}.png", *written));
                let carry = Carry {
                    sixteen_bit: *deep,
                    ..Carry::default()
                };
                let opts = WriteOptions {
                    quantize,
                    jpeg_quality: image_io::DEFAULT_JPEG_QUALITY,
                    overwrite: true,
                };
                image_io::write_picture(&path, image, &carry, &opts)
            }
        }
    }

    /// Finish: wait for the encoder, check what it wrote, then give the output its name (replacing an existing
    /// file only with `overwrite`; into an existing folder, with `overwrite`, only the frame files written
    /// replace theirs, and nothing else there is touched). Dropped unfinished, a sink leaves nothing behind.
    pub fn finish(self, overwrite: bool) -> Result<PathBuf> {
        match self {
            Sink::Encoder {
                mut child,
                stdin,
                temp,
                output,
                written,
                ..
            } => {
                drop(stdin);
                child.finish("the encoder failed")?;
                // ffmpeg exits 0 after a failed write (a full disk): what the file holds is read back.
                let unreadable = |why: String| {
                    Tool::Ffmpeg.failed(&format!(
                        "{}: the file it wrote is incomplete ({why}; is the disk full?); nothing was written",
                        crate::names::escaped(&output)
                    ))
                };
                match super::probe::video_packets(temp.path()) {
                    Ok(n) if n == written => {}
                    Ok(n) => return Err(unreadable(format!("{n} of {written} frames"))),
                    Err(Error::Cancelled) => return Err(Error::Cancelled),
                    Err(e) => return Err(unreadable(e.to_string())),
                }
                image_io::persist(temp, &output, overwrite)?;
                Ok(output)
            }
            Sink::Folder { temp, output, .. } => {
                if !output.exists() {
                    std::fs::rename(temp.path(), &output).map_err(|e| Error::io(&output, e))?;
                    let _ = temp.keep();
                    return Ok(output);
                }
                if !overwrite {
                    return Err(Error::Exists { path: output });
                }
                if !output.is_dir() {
                    return Err(Error::input(
                        &output,
                        "it exists and is not a folder: frames go into a folder",
                    ));
                }
                // An existing folder keeps everything but the frame files this run wrote, which replace
                // their namesakes one by one.
                let mut names: Vec<_> = std::fs::read_dir(temp.path())
                    .map_err(|e| Error::io(temp.path(), e))?
                    .filter_map(|e| e.ok().map(|e| e.file_name()))
                    .collect();
                names.sort();
                for name in names {
                    let to = output.join(&name);
                    std::fs::rename(temp.path().join(&name), &to).map_err(|e| Error::io(&to, e))?;
                }
                Ok(output)
            }
        }
    }
}
