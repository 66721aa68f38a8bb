//! Where frames come from: a video file decoded by an ffmpeg child process into raw RGB on a pipe (8-bit,
//! or 16-bit for sources of more bits), or a folder of numbered images (PNG, TIFF, …) in name order.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::probe::{Probe, Rational, VideoInfo};
use super::tools::{file_arg, last_line, Running, Tool};
use crate::error::{Error, Result};
use crate::image_io::{self, Picture};

/// An input: a probed video file, or the image files of a folder.
#[derive(Debug, Clone)]
pub enum Source {
    /// A video file and what ffprobe said of it.
    File {
        /// The file.
        path: PathBuf,
        /// Its streams.
        probe: Box<Probe>,
    },
    /// A folder's images, sorted by name.
    Folder {
        /// The folder.
        path: PathBuf,
        /// Its image files.
        files: Vec<PathBuf>,
    },
}

/// The part of the input to restore: from `start` seconds, for `duration` seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    /// Seconds from the beginning. Default: None (from the first frame).
    pub start: Option<f64>,
    /// Seconds. Default: None (to the end).
    pub duration: Option<f64>,
}

impl Window {
    /// ffmpeg's input options for it.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![];
        if let Some(s) = self.start {
            a.extend(["-ss".into(), format!("{s}")]);
        }
        if let Some(d) = self.duration {
            a.extend(["-t".into(), format!("{d}")]);
        }
        a
    }
}

impl Source {
    /// Open `path`: a folder's images, or a file ffprobe can read with a video stream.
    pub fn open(path: &Path) -> Result<Source> {
        if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| Error::io(path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && image_io::is_supported_input(p))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(Error::input(
                    path,
                    "the folder holds no image files (PNG, TIFF, JPEG, WebP, BMP)",
                ));
            }
            return Ok(Source::Folder {
                path: path.to_path_buf(),
                files,
            });
        }
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            // A FIFO or a device would keep the prober waiting for data that may never come.
            return Err(Error::input(
                path,
                "not a regular file (a FIFO, socket or device): video is read from a file or a folder of frames",
            ));
        }
        // Both programs are needed to decode it: a missing one is told before anything starts.
        Tool::Ffprobe.path()?;
        Tool::Ffmpeg.path()?;
        let probe = Box::new(super::probe::probe(path)?);
        Ok(Source::File {
            path: path.to_path_buf(),
            probe,
        })
    }

    /// The input's path.
    pub fn path(&self) -> &Path {
        match self {
            Source::File { path, .. } | Source::Folder { path, .. } => path,
        }
    }

    /// Frames expected in `window` where it can be told beforehand (for progress).
    pub fn expected_frames(&self, window: &Window) -> Option<usize> {
        match self {
            Source::Folder { files, .. } => Some(files.len()),
            Source::File { probe, .. } => {
                let v = &probe.video;
                let rate = v.avg_rate.unwrap_or(v.rate).value();
                let whole = v.frames.map(|n| n as f64).or(v.duration.map(|d| d * rate))?;
                let skipped = window.start.map_or(0.0, |s| s * rate);
                let left = (whole - skipped).max(0.0);
                Some(window.duration.map_or(left, |d| left.min(d * rate)).round() as usize)
            }
        }
    }

    /// Start reading frames.
    pub fn frames(&self, window: &Window, max_pixels: u64) -> Result<Frames> {
        match self {
            Source::Folder { files, .. } => {
                let skip = window.start.map_or(0, |s| s.max(0.0) as usize);
                let take = window.duration.map_or(usize::MAX, |d| d.max(0.0).ceil() as usize);
                Ok(Frames::Folder {
                    files: files
                        .iter()
                        .skip(skip)
                        .take(take)
                        .cloned()
                        .collect::<Vec<_>>()
                        .into_iter(),
                    max_pixels,
                })
            }
            Source::File { path, probe } => {
                let (height, width) = probe.video.upright_size();
                let deep = probe.video.deep;
                let mut cmd = Tool::Ffmpeg.command()?;
                cmd.args(window.args())
                    .arg("-i")
                    .arg(file_arg(path))
                    .args(["-map", &format!("0:{}", probe.video.index)])
                    .args([
                        "-fps_mode",
                        "passthrough",
                        "-enc_time_base",
                        "-1",
                        "-f",
                        "rawvideo",
                        "-pix_fmt",
                    ])
                    .arg(if deep { "rgb48le" } else { "rgb24" })
                    .arg("pipe:1");
                let child = Tool::Ffmpeg.spawn(cmd, Stdio::null(), Stdio::piped())?;
                Ok(Frames::Decoder(Decoder {
                    path: path.clone(),
                    child,
                    height,
                    width,
                    deep,
                    max_pixels,
                    read: 0,
                }))
            }
        }
    }
}

/// A running ffmpeg decoder.
pub struct Decoder {
    path: PathBuf,
    child: Running,
    height: usize,
    width: usize,
    deep: bool,
    max_pixels: u64,
    read: usize,
}

/// Frames of a source, in order; None at the end.
pub enum Frames {
    /// From ffmpeg's pipe.
    Decoder(Decoder),
    /// From image files.
    Folder {
        /// The files left.
        files: std::vec::IntoIter<PathBuf>,
        /// The size limit.
        max_pixels: u64,
    },
}

impl Frames {
    /// What kills the decoder (where one runs) from another thread, so a read it blocks in ends.
    pub fn killer(&self) -> Option<super::tools::Killer> {
        match self {
            Frames::Decoder(d) => Some(d.child.killer()),
            Frames::Folder { .. } => None,
        }
    }

    /// The next frame: None at the end; an error naming the input for a truncated or undecodable one.
    pub fn next_frame(&mut self) -> Result<Option<Picture>> {
        match self {
            Frames::Folder { files, max_pixels } => files
                .next()
                .map(|f| image_io::read_picture(&f, *max_pixels))
                .transpose(),
            Frames::Decoder(d) => d.next_frame(),
        }
    }
}

impl Decoder {
    fn next_frame(&mut self) -> Result<Option<Picture>> {
        let sample = if self.deep { 2 } else { 1 };
        let size = self.height * self.width * 3 * sample;
        let mut buf = Vec::with_capacity(size);
        let stdout = self.child.stdout().expect("piped");
        let filled = stdout
            .take(size as u64)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(&self.path, e))?;
        if filled < size {
            // The end of the stream: the decoder's exit and error output say whether it is the end of the
            // video (a clean exit, nothing printed) or a failure.
            let what = format!("could not decode it after {} frame(s)", self.read);
            let printed = self
                .child
                .finish(&what)
                .map_err(|e| Error::input(&self.path, e.to_string()))?;
            if !printed.is_empty() {
                return Err(Error::input(
                    &self.path,
                    format!("ffmpeg: {what}: {}", last_line(&printed, "")),
                ));
            }
            if filled > 0 {
                return Err(Error::input(&self.path, format!("frame {} ends early", self.read + 1)));
            }
            if self.read == 0 {
                return Err(Error::input(&self.path, "no frames could be decoded from it"));
            }
            return Ok(None);
        }
        self.read += 1;
        let (h, w) = (self.height, self.width);
        let picture = if self.deep {
            let samples = buf.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]));
            Picture::from_samples(h, w, 3, samples, self.max_pixels)
        } else {
            Picture::from_samples(h, w, 3, buf.iter().copied(), self.max_pixels)
        };
        picture.map(Some).map_err(|e| Error::input(&self.path, e.to_string()))
    }
}

/// The frame rate of a folder's frames when a container is written: `fps`, else 24.
pub fn folder_rate(fps: Option<Rational>) -> Rational {
    fps.unwrap_or(Rational { num: 24, den: 1 })
}

/// The timestamps of the frames of the video stream within `window`, in its time base and counted from
/// the first, as ffprobe decodes them: for variable frame rates, which the encoder is then given frame by
/// frame.
pub fn frame_times(path: &Path, video: &VideoInfo, window: &Window) -> Result<Vec<i64>> {
    let start = window.start.unwrap_or(0.0);
    let stream = video.index.to_string();
    let mut args = vec![
        "-select_streams",
        &stream,
        "-show_entries",
        "frame=best_effort_timestamp",
        "-of",
        "csv=p=0",
    ];
    let interval;
    if window.start.is_some() || window.duration.is_some() {
        let length = window.duration.map(|d| format!("+{d}")).unwrap_or_default();
        interval = format!("{start}%{length}");
        args.extend(["-read_intervals", &interval]);
    }
    let out = super::probe::ffprobe(path, &args, None)?;
    let tb = video.time_base.map_or(1.0 / 90000.0, |t| t.value());
    let end = window.duration.map_or(f64::INFINITY, |d| start + d);
    let mut times: Vec<i64> = super::probe::csv_integers(&out)
        .into_iter()
        .filter(|&t| (t as f64 * tb) >= start - 1e-6 && (t as f64 * tb) < end - 1e-6)
        .collect();
    times.sort_unstable();
    // Two frames at one time cannot both be written at their times: said now, not after every frame.
    if let Some(k) = times.windows(2).position(|w| w[0] == w[1]) {
        return Err(Error::input(
            path,
            format!(
                "frames {} and {} have the same timestamp ({} in the stream's time base): a variable frame rate needs distinct ones",
                k + 1,
                k + 2,
                times[k]
            ),
        ));
    }
    let first = times.first().copied().unwrap_or(0);
    Ok(times.into_iter().map(|t| t - first).collect())
}
