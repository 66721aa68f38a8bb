//! Where restored frames go: an ffmpeg child process encoding raw RGB from its standard input (the other
//! streams copied from the source, the colour tags kept), or numbered PNG files in a folder. Both write
//! under a temporary name next to the output and take the output's name only once everything is written,
//! so an interrupted or failed run leaves no output behind.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};

use super::command::{encoder_args, encoder_filters, Encoding, Target};
use super::tools::{last_line, Tool};
use crate::error::{Error, Result};
use crate::image_io::{self, Carry, WriteOptions};
use crate::preprocess::{Image, Quantize};

/// Restored frames on their way out.
pub enum Sink {
    /// An ffmpeg encoder reading raw frames.
    Encoder {
        /// The child.
        child: Child,
        /// Its standard input.
        stdin: Option<ChildStdin>,
        /// Its error output, read on a thread.
        errors: Option<std::thread::JoinHandle<Vec<u8>>>,
        /// Where it writes.
        temp: PathBuf,
        /// The output.
        output: PathBuf,
        /// The filter script, removed at the end.
        script: Option<PathBuf>,
        /// 16-bit frames.
        deep: bool,
    },
    /// PNG files in a folder.
    Folder {
        /// The folder written.
        temp: PathBuf,
        /// The output folder.
        output: PathBuf,
        /// Frames written.
        written: usize,
        /// 16-bit frames.
        deep: bool,
    },
}

/// A hidden name next to `output` for writing it.
pub fn temp_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) => (s.to_string(), format!(".{e}")),
        None => (name.clone(), String::new()),
    };
    output.with_file_name(format!(".{stem}.partial-{}{ext}", std::process::id()))
}

impl Sink {
    /// Start an encoder writing `output` (in the container its extension names).
    pub fn encoder(t: &Target<'_>, enc: &Encoding, output: &Path) -> Result<Sink> {
        let temp = temp_path(output);
        let script = if t.timestamps.is_some() {
            let path = temp.with_extension("filters.txt");
            std::fs::write(&path, encoder_filters(t, enc)).map_err(|e| Error::io(&path, e))?;
            Some(path)
        } else {
            None
        };
        let mut child = Tool::Ffmpeg
            .command()?
            .args(encoder_args(t, enc, &temp, script.as_deref()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Tool::Ffmpeg.failed(&format!("cannot start: {e}")))?;
        let stdin = child.stdin.take();
        let stderr = child.stderr.take().expect("piped");
        let errors = std::thread::spawn(move || {
            let mut text = vec![];
            let _ = stderr.take(1 << 20).read_to_end(&mut text);
            text
        });
        Ok(Sink::Encoder {
            child,
            stdin,
            errors: Some(errors),
            temp,
            output: output.to_path_buf(),
            script,
            deep: t.deep,
        })
    }

    /// Start writing numbered PNG frames into the folder `output`.
    pub fn folder(output: &Path, deep: bool) -> Result<Sink> {
        let temp = temp_path(output);
        std::fs::create_dir_all(&temp).map_err(|e| Error::io(&temp, e))?;
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
                stdin, deep, output, ..
            } => {
                let carry = Carry::default();
                let bytes: Vec<u8> = if *deep {
                    image_io::to_samples::<u16>(image, &carry, quantize)?
                        .into_iter()
                        .flat_map(u16::to_le_bytes)
                        .collect()
                } else {
                    image_io::to_samples::<u8>(image, &carry, quantize)?
                };
                let pipe = stdin.as_mut().expect("open until finished");
                let Err(e) = pipe.write_all(&bytes) else {
                    return Ok(());
                };
                let output = output.clone();
                // The encoder stopped early: its own message says why.
                let why = self.stop_and_say();
                Err(why.unwrap_or_else(|| Error::io(output, e)))
            }
            Sink::Folder {
                temp, written, deep, ..
            } => {
                *written += 1;
                let path = temp.join(format!("frame_{:06}.png", *written));
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

    /// The encoder's error once it has exited early.
    fn stop_and_say(&mut self) -> Option<Error> {
        if let Sink::Encoder {
            child, stdin, errors, ..
        } = self
        {
            stdin.take();
            let status = child.wait().ok()?;
            let text = errors.take().and_then(|t| t.join().ok()).unwrap_or_default();
            return Some(Tool::Ffmpeg.failed(&format!(
                "the encoder stopped: {}",
                last_line(&text, &status.to_string())
            )));
        }
        None
    }

    /// Finish: wait for the encoder, then give the output its name (replacing an existing one only with
    /// `overwrite`).
    pub fn finish(mut self, overwrite: bool) -> Result<PathBuf> {
        let (temp, output) = match &mut self {
            Sink::Encoder {
                child,
                stdin,
                errors,
                temp,
                output,
                ..
            } => {
                stdin.take();
                let status = child.wait().map_err(|e| Error::io(output.clone(), e))?;
                let text = errors.take().and_then(|t| t.join().ok()).unwrap_or_default();
                if !status.success() {
                    return Err(Tool::Ffmpeg.failed(&format!(
                        "the encoder failed: {}",
                        last_line(&text, &status.to_string())
                    )));
                }
                (temp.clone(), output.clone())
            }
            Sink::Folder { temp, output, .. } => (temp.clone(), output.clone()),
        };
        if output.exists() {
            if !overwrite {
                return Err(Error::Exists { path: output });
            }
            let removed = if output.is_dir() {
                std::fs::remove_dir_all(&output)
            } else {
                std::fs::remove_file(&output)
            };
            removed.map_err(|e| Error::io(&output, e))?;
        }
        std::fs::rename(&temp, &output).map_err(|e| Error::io(&output, e))?;
        Ok(output)
    }
}

impl Drop for Sink {
    /// Whatever was not finished is removed (an interrupted or failed run leaves no output).
    fn drop(&mut self) {
        match self {
            Sink::Encoder {
                child,
                stdin,
                temp,
                script,
                ..
            } => {
                stdin.take();
                if child.try_wait().ok().flatten().is_none() {
                    let _ = child.kill();
                }
                let _ = child.wait();
                let _ = std::fs::remove_file(temp);
                if let Some(s) = script {
                    let _ = std::fs::remove_file(s);
                }
            }
            Sink::Folder { temp, .. } => {
                let _ = std::fs::remove_dir_all(temp);
            }
        }
    }
}
