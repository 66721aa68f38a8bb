//! Video: `diffir video` restores every frame of a file (decoded and encoded by ffmpeg child processes,
//! the other streams copied) or a folder of frames, with one prior per shot or per frame, decoding,
//! restoring and encoding at once with bounded queues; and YUV4MPEG2 streams frame by frame (`y4m.rs`).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, RecvTimeoutError};

use crate::error::{Error, Result};
use crate::image_io::Depth;
use crate::pipeline::{Control, Finish, Pipeline, PooledFeatures};

pub mod command;
pub mod probe;
pub mod shots;
pub mod sink;
pub mod source;
pub mod tools;
pub mod y4m;
pub mod yuv;

pub use command::Encoding;
pub use probe::Rational;
pub use source::{Source, Window};

/// Frames in flight between decoding and restoring, and between restoring and encoding.
const QUEUE: usize = 3;

/// Where each frame's prior comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriorMode {
    /// One prior per shot: CPEN's features pooled over the shot's frames, one reverse diffusion with the
    /// seed's noise; every frame of the shot gets it.
    Shot,
    /// Each frame its own prior, as `diffir restore` restores a picture.
    Frame,
}

impl std::str::FromStr for PriorMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "shot" => Ok(PriorMode::Shot),
            "frame" => Ok(PriorMode::Frame),
            _ => Err(format!("'{s}' is not a prior mode (shot or frame)")),
        }
    }
}

/// How a video is restored.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoOptions {
    /// Where priors come from. Default: [`PriorMode::Frame`] (the flicker measurement in BENCHMARKS.md
    /// decides).
    pub prior: PriorMode,
    /// The cut score above which a new shot starts. Default: [`shots::DEFAULT_THRESHOLD`].
    pub scene_threshold: f32,
    /// The longest shot in frames; longer ones are split. Default: [`shots::DEFAULT_MAX_SHOT`].
    pub max_shot: usize,
    /// The part of the input. Default: all of it.
    pub window: Window,
    /// The compression of a video output.
    pub encoding: Encoding,
    /// The frame rate of a folder of frames written as a video. Default: None (24).
    pub fps: Option<Rational>,
    /// Resize and self-ensemble, as for pictures.
    pub finish: Finish,
    /// Replace an existing output.
    pub overwrite: bool,
}

impl Default for VideoOptions {
    fn default() -> Self {
        VideoOptions {
            prior: PriorMode::Frame,
            scene_threshold: shots::DEFAULT_THRESHOLD,
            max_shot: shots::DEFAULT_MAX_SHOT,
            window: Window::default(),
            encoding: Encoding::default(),
            fps: None,
            finish: Finish::default(),
            overwrite: false,
        }
    }
}

/// Which pass a progress report is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Shot priors: reading every frame for cuts and CPEN's features.
    Analyse,
    /// Restoring and writing frames.
    Restore,
}

/// Where a video restore is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameProgress {
    /// The pass.
    pub pass: Pass,
    /// Frames done in this pass.
    pub done: usize,
    /// Frames in all, where known.
    pub total: Option<usize>,
}

/// One shot and its prior.
#[derive(Debug, Clone, PartialEq)]
pub struct Shot {
    /// Its first frame (from 0).
    pub first: usize,
    /// Its frames.
    pub frames: usize,
    /// The cut score that started it (0 for the first shot and for splits of long shots).
    pub score: f32,
    /// The prior (IPR) its frames got.
    pub prior: Vec<f32>,
}

/// What a video restore did.
#[derive(Debug, Clone, Default)]
pub struct VideoReport {
    /// Frames restored.
    pub frames: usize,
    /// The shots, with `--prior shot`.
    pub shots: Vec<Shot>,
    /// The output written.
    pub output: PathBuf,
    /// What was changed or left out, in words.
    pub notes: Vec<String>,
}

/// Whether `output` can be written from `input`: what it asks for (see [`output_kind`]); an error where it is
/// the input or a folder holding it (replacing it would destroy the input, even with `overwrite`), and an
/// [`Error::Exists`] where it exists without `overwrite`.
pub fn check_output(input: &Path, output: &Path, overwrite: bool) -> Result<Option<&'static str>> {
    let kind = output_kind(output)?;
    if holds(output, input) {
        return Err(Error::input(
            output,
            format!(
                "this output is the input {} or a folder holding it: choose another output",
                crate::names::escaped(input)
            ),
        ));
    }
    if output.exists() && !overwrite {
        return Err(Error::Exists {
            path: output.to_path_buf(),
        });
    }
    Ok(kind)
}

/// Whether the existing `output` is `input` (the same file, also through another link) or a folder that
/// holds it.
fn holds(output: &Path, input: &Path) -> bool {
    let (Ok(out), Ok(inp)) = (std::fs::canonicalize(output), std::fs::canonicalize(input)) else {
        return false;
    };
    if out == inp || (out.is_dir() && inp.starts_with(&out)) {
        return true;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(a), Ok(b)) = (std::fs::metadata(&out), std::fs::metadata(&inp)) {
            return a.is_file() && (a.dev(), a.ino()) == (b.dev(), b.ino());
        }
    }
    false
}

/// What an output path asks for: a container by its extension, or a folder of frames.
pub fn output_kind(output: &Path) -> Result<Option<&'static str>> {
    if output.is_dir() || output.extension().is_none() {
        return Ok(None);
    }
    let ext = output
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    command::CONTAINERS
        .iter()
        .find(|c| **c == ext)
        .map(|c| Some(*c))
        .ok_or_else(|| {
            Error::Usage(format!(
                "{}: a video output is {} (by its extension), or a folder for PNG frames",
                crate::names::escaped(output),
                command::CONTAINERS.join(", ")
            ))
        })
}

/// Restore the video (or folder of frames) `input` into `output`: a container by its extension, or a
/// folder of numbered PNG frames. `on_frame` hears of every frame of each pass.
pub fn restore_video(
    pipeline: &Pipeline,
    input: &Path,
    output: &Path,
    opts: &VideoOptions,
    control: &Control<'_>,
    on_frame: &(dyn Fn(FrameProgress) + Sync),
) -> Result<VideoReport> {
    restore_source(pipeline, &Source::open(input)?, output, opts, control, on_frame)
}

/// [`restore_video`] of a source already opened (probed once, before the model starts).
pub fn restore_source(
    pipeline: &Pipeline,
    source: &Source,
    output: &Path,
    opts: &VideoOptions,
    control: &Control<'_>,
    on_frame: &(dyn Fn(FrameProgress) + Sync),
) -> Result<VideoReport> {
    let input = source.path();
    let container = check_output(input, output, opts.overwrite)?;
    let mut report = VideoReport {
        output: output.to_path_buf(),
        ..VideoReport::default()
    };
    let max_pixels = pipeline.options().max_pixels;
    if let Source::File { probe, .. } = source {
        // The size ffprobe read is refused before a frame is decoded.
        let (h, w) = probe.video.upright_size();
        crate::image_io::check_pixels(input, h as u64, w as u64, max_pixels)?;
    }
    check_window(source, &opts.window)?;
    let mut total = source.expected_frames(&opts.window);
    if opts.prior == PriorMode::Shot {
        report.shots = analyse(pipeline, source, opts, control, total, on_frame)?;
        total = Some(report.shots.iter().map(|s| s.frames).sum());
    }
    let frames = Decoding::start(source.frames(&opts.window, max_pixels)?);
    // The first frame decides the output's size and depth.
    let Some(first) = frames.next(control)? else {
        return Err(Error::input(input, "it has no frames in the window asked for"));
    };
    let deep = first.depth == Depth::Sixteen;
    let quantize = pipeline.quantize();
    // With shot priors, frame i gets the prior of the last shot that starts at or before it.
    let prior_of = |i: usize| -> Option<&[f32]> {
        let k = report.shots.partition_point(|s| s.first <= i).checked_sub(1)?;
        Some(report.shots[k].prior.as_slice())
    };
    let restore = |picture: &crate::image_io::Picture, i: usize| {
        let frame_control = Control {
            prior: prior_of(i).or(control.prior),
            ..*control
        };
        pipeline
            .restore_picture(picture, None, opts.finish, &frame_control)
            .map(|r| r.image)
    };
    let first_out = restore(&first, 0)?;
    let size = (first_out.height, first_out.width);
    let timestamps = match &source {
        Source::File { path, probe } if probe.video.variable_rate() => {
            let ts = source::frame_times(path, &probe.video, &opts.window)?;
            report.notes.push(format!(
                "variable frame rate: {} frame timestamps kept (average {:.3} fps)",
                ts.len(),
                probe.video.avg_rate.map_or(0.0, |r| r.value())
            ));
            Some(ts)
        }
        _ => None,
    };
    let mut sink = match container {
        None => sink::Sink::folder(output, deep)?,
        Some(container) => {
            // A variable frame rate's nominal rate is its average (its frames get their own times).
            let (rate, src) = match &source {
                Source::File { path, probe } => (
                    probe
                        .video
                        .avg_rate
                        .filter(|_| timestamps.is_some())
                        .unwrap_or(probe.video.rate),
                    Some((path.as_path(), probe.as_ref())),
                ),
                Source::Folder { .. } => (source::folder_rate(opts.fps), None),
            };
            let target = command::Target {
                container,
                size,
                deep,
                rate,
                source: src,
                window: opts.window,
                timestamps: timestamps.as_deref(),
            };
            sink::Sink::encoder(&target, &opts.encoding, output)?
        }
    };
    if let Source::File { probe, .. } = &source {
        if probe.video.rotation != 0 {
            report.notes.push(format!(
                "the source is displayed rotated by {}°: frames were restored upright and written without a rotation flag",
                probe.video.rotation
            ));
        }
        let dropped: Vec<String> = probe
            .others
            .iter()
            .filter(|s| !matches!(s.kind.as_str(), "audio" | "subtitle"))
            .map(|s| format!("#{} ({} {})", s.index, s.kind, s.codec))
            .collect();
        if !dropped.is_empty() {
            report.notes.push(format!("streams not copied: {}", dropped.join(", ")));
        }
    }
    on_frame(FrameProgress {
        pass: Pass::Restore,
        done: 1,
        total,
    });
    // Decoding, restoring and writing run at once: the decoder and the writer on threads of their own,
    // with at most QUEUE frames waiting between them.
    let (to_write, restored) = sync_channel::<crate::preprocess::Image>(QUEUE);
    let count = std::thread::scope(|scope| -> Result<usize> {
        let writer = scope.spawn(move || -> Result<sink::Sink> {
            sink.write(&first_out, quantize)?;
            for image in restored {
                sink.write(&image, quantize)?;
            }
            Ok(sink)
        });
        let mut done = 1;
        let mut failure = None;
        while let Some(picture) = frames.next(control).transpose() {
            let result = picture.and_then(|p| {
                if (p.rgb.height, p.rgb.width) != (first.rgb.height, first.rgb.width) {
                    return Err(Error::input(
                        input,
                        format!(
                            "frame {} is {}x{}, the first {}x{}",
                            done + 1,
                            p.rgb.width,
                            p.rgb.height,
                            first.rgb.width,
                            first.rgb.height
                        ),
                    ));
                }
                restore(&p, done)
            });
            match result {
                Ok(image) => {
                    if to_write.send(image).is_err() {
                        break;
                    }
                    done += 1;
                    on_frame(FrameProgress {
                        pass: Pass::Restore,
                        done,
                        total,
                    });
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        drop(to_write);
        let written = writer
            .join()
            .map_err(|_| Error::Backend("the frame writer panicked".into()))?;
        if let Some(e) = failure {
            return Err(e);
        }
        let sink = written?;
        if !report.shots.is_empty() && total != Some(done) {
            return Err(Error::input(
                input,
                format!("the second reading gave {done} frames, the first {total:?}"),
            ));
        }
        if let Some(ts) = &timestamps {
            if ts.len() != done {
                return Err(Error::input(
                    input,
                    format!(
                        "ffprobe found {} frame timestamps but {done} frames were decoded",
                        ts.len()
                    ),
                ));
            }
        }
        sink.finish(opts.overwrite)?;
        Ok(done)
    })?;
    report.frames = count;
    Ok(report)
}

/// An error where `window` starts at or past the end of `source`: nothing would be restored.
fn check_window(source: &Source, window: &source::Window) -> Result<()> {
    let Some(start) = window.start else { return Ok(()) };
    let end = match source {
        Source::File { probe, .. } => probe.video.duration,
        Source::Folder { files, .. } => Some(files.len() as f64),
    };
    match end {
        Some(end) if start >= end => Err(Error::input(
            source.path(),
            format!("nothing in the window asked for: it starts at {start}, and the input ends at {end}"),
        )),
        _ => Ok(()),
    }
}

/// The first pass of shot priors: every frame's cut score and CPEN features, the shots, and each shot's
/// prior from its pooled features and the pipeline's noise.
fn analyse(
    pipeline: &Pipeline,
    source: &Source,
    opts: &VideoOptions,
    control: &Control<'_>,
    total: Option<usize>,
    on_frame: &(dyn Fn(FrameProgress) + Sync),
) -> Result<Vec<Shot>> {
    let frames = Decoding::start(source.frames(&opts.window, pipeline.options().max_pixels)?);
    let mut scores = vec![];
    let mut features: Vec<PooledFeatures> = vec![];
    let mut previous: Option<shots::Thumb> = None;
    while let Some(picture) = frames.next(control)? {
        let thumb = shots::Thumb::of(&picture.rgb);
        scores.push(previous.as_ref().map_or(0.0, |p| thumb.score(p)));
        previous = Some(thumb);
        features.push(pipeline.pooled_features(&picture.rgb, None)?);
        on_frame(FrameProgress {
            pass: Pass::Analyse,
            done: features.len(),
            total,
        });
    }
    if features.is_empty() {
        return Err(Error::input(source.path(), "it has no frames in the window asked for"));
    }
    let starts = shots::shot_starts(&scores, opts.scene_threshold, opts.max_shot);
    let noise = control.noise;
    let mut out = vec![];
    for (k, &first) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(features.len());
        let mut pooled = PooledFeatures::default();
        for f in &features[first..end] {
            pooled.add(f);
        }
        let (_, steps) = pipeline.shared_prior(&pooled, noise)?;
        out.push(Shot {
            first,
            frames: end - first,
            score: if first == 0 || scores[first] <= opts.scene_threshold {
                0.0
            } else {
                scores[first]
            },
            prior: steps.last().cloned().unwrap_or_default(),
        });
    }
    Ok(out)
}

/// A source's frames decoded on a thread of their own, at most QUEUE ahead: the restore waits for the next
/// one while hearing Ctrl-C, and a decoder that stalls is killed when the restore stops early (dropped).
struct Decoding {
    frames: std::sync::mpsc::Receiver<Result<crate::image_io::Picture>>,
    killer: Option<tools::Killer>,
}

impl Decoding {
    fn start(mut frames: source::Frames) -> Decoding {
        let killer = frames.killer();
        let (tx, rx) = sync_channel(QUEUE);
        // The decoder stops at the end, at its first error (sent on), or once nobody listens.
        std::thread::spawn(move || {
            while let Some(item) = frames.next_frame().transpose() {
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    break;
                }
            }
        });
        Decoding { frames: rx, killer }
    }

    /// The next frame (None at the end), or [`Error::Cancelled`] once `control` is cancelled.
    fn next(&self, control: &Control<'_>) -> Result<Option<crate::image_io::Picture>> {
        loop {
            match self.frames.recv_timeout(std::time::Duration::from_millis(50)) {
                Ok(item) => return item.map(Some),
                Err(RecvTimeoutError::Timeout) if control.cancelled() => return Err(Error::Cancelled),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
            }
        }
    }
}

impl Drop for Decoding {
    fn drop(&mut self) {
        // A decoder still running is not waited for: killed, its thread ends and reaps it.
        if let Some(k) = &self.killer {
            k.kill();
        }
    }
}
