//! `diffir video`: one video file (or folder of frames) in, one out, with a progress bar of frames, frames
//! per second and the time left; and `diffir restore --format y4m`, YUV4MPEG2 streams frame by frame.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::Args;

use super::args::{EngineArgs, ModelArg};
use crate::error::{Error, Result};
use crate::options::Noise;
use crate::pipeline::{Control, Finish};
use crate::video::{self, Encoding, FrameProgress, Pass, PriorMode, Rational, VideoOptions, Window};

#[derive(Debug, Args)]
pub struct VideoArgs {
    /// The video file (anything ffmpeg reads), or a folder of frames (PNG, TIFF, … in name order).
    pub input: PathBuf,
    /// The output: .mp4, .mkv, .mov or .webm (the container by the extension; audio and subtitles copied),
    /// or a folder for numbered PNG frames.
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Where each frame's prior comes from: shot (one prior per shot, from CPEN's features pooled over the
    /// shot) or frame (each frame its own, as `restore` does).
    #[arg(long, default_value = "frame", value_parser = clap::builder::PossibleValuesParser::new(["shot", "frame"]))]
    pub prior: String,
    /// Cut score (mean absolute difference of 16×16 grids of luma, 0–1) above which a new shot starts.
    #[arg(long, default_value_t = video::shots::DEFAULT_THRESHOLD, value_parser = parse_fraction)]
    pub scene_threshold: f32,
    /// The longest shot in frames: longer shots are split.
    #[arg(long, default_value_t = video::shots::DEFAULT_MAX_SHOT, value_parser = parse_frames)]
    pub max_shot: usize,
    /// The ffmpeg video encoder [default: libx264; libvpx-vp9 for .webm].
    #[arg(long)]
    pub codec: Option<String>,
    /// Constant quality on the encoder's scale [default: 18 for x264/x265, 24 for VP9].
    #[arg(long, conflicts_with = "lossless", value_parser = clap::value_parser!(u8).range(0..=63))]
    pub crf: Option<u8>,
    /// Lossless RGB: FFV1 in .mkv, libx264rgb in .mp4/.mov, VP9 lossless in .webm.
    #[arg(long)]
    pub lossless: bool,
    /// Start this many seconds in (a folder of frames: this many frames).
    #[arg(long, value_name = "SECONDS", value_parser = parse_time)]
    pub start: Option<f64>,
    /// Restore this many seconds (a folder of frames: this many frames); more than 0.
    #[arg(long, value_name = "SECONDS", value_parser = parse_duration)]
    pub duration: Option<f64>,
    /// Frame rate of a folder of frames written as a video (e.g. 24, 30000/1001) [default: 24].
    #[arg(long, value_parser = |s: &str| Rational::parse(s).ok_or_else(|| format!("'{s}' is not a frame rate")))]
    pub fps: Option<Rational>,
    /// Seed of the prior's initial noise (the same draw for every frame and shot).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Resize the result to this many times the input's size, Lanczos.
    #[arg(long, value_name = "X", value_parser = super::args::parse_outscale)]
    pub outscale: Option<f64>,
    /// Replace an existing output.
    #[arg(long, conflicts_with = "skip_existing")]
    pub overwrite: bool,
    /// Do nothing when the output exists already (a finished run).
    #[arg(long)]
    pub skip_existing: bool,
    /// Refuse a video whose frames have more pixels than this, before decoding it.
    #[arg(long, default_value_t = crate::image_io::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
}

fn parse_frames(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(format!("'{s}' is not a number of frames (1 or more)")),
    }
}

fn parse_fraction(s: &str) -> std::result::Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a number in [0, 1]")),
    }
}

/// The longest time taken: a year of video, in seconds (ffmpeg's own limit is far above; past it the number
/// is no time a video has).
const MAX_SECONDS: f64 = 366.0 * 86400.0;

fn parse_time(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=MAX_SECONDS).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a number of seconds from 0 to {MAX_SECONDS}")),
    }
}

fn parse_duration(s: &str) -> std::result::Result<f64, String> {
    match parse_time(s)? {
        // ffmpeg reads `-t 0` as no limit: the whole clip would be restored.
        v if v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' restores nothing: a duration is more than 0 seconds")),
    }
}

/// What `diffir video` did.
pub enum VideoDone {
    /// Written: frames, shots and notes.
    Written(video::VideoReport),
    /// The output existed (`--skip-existing`).
    Skipped,
}

/// A progress bar on stderr where it is a terminal and not --quiet.
fn frame_bar(quiet: bool) -> Option<indicatif::ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new_spinner();
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:30} {pos}/{len} frames {per_sec} {elapsed_precise} ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(b)
}

/// `diffir video`.
pub fn run_video(args: &VideoArgs) -> Result<VideoDone> {
    // Ctrl-C is handled before the first child starts (the prober of a stalled input included).
    let cancel = crate::interrupt::install();
    if args.output.exists() && args.skip_existing {
        return Ok(VideoDone::Skipped);
    }
    if video::check_output(&args.input, &args.output, args.overwrite)?.is_some() {
        // The encoder, for frames read from a folder too: missing, it is told before the model loads.
        video::tools::Tool::Ffmpeg.path()?;
    }
    if args.input.as_os_str() == "-" {
        return Err(Error::Usage(
            "diffir video reads a file or a folder; for a YUV4MPEG2 pipe use diffir restore - -o - --format y4m".into(),
        ));
    }
    // The input is checked before the model starts: a missing ffmpeg or an unreadable file says so first.
    let source = video::Source::open(&args.input)?;
    let mut options = args.engine.options()?;
    options.noise = Noise::Seed(args.seed);
    options.max_pixels = args.max_pixels;
    let pipeline = args.engine.open(args.model.bundle()?, &options)?;
    let opts = VideoOptions {
        prior: args.prior.parse::<PriorMode>().map_err(Error::Usage)?,
        scene_threshold: args.scene_threshold,
        max_shot: args.max_shot,
        window: Window {
            start: args.start,
            duration: args.duration,
        },
        encoding: Encoding {
            codec: args.codec.clone(),
            crf: args.crf,
            lossless: args.lossless,
        },
        fps: args.fps,
        finish: Finish {
            outscale: args.outscale,
            tta: false,
        },
        overwrite: args.overwrite,
    };
    let bar = frame_bar(args.engine.quiet);
    let progress = |p: FrameProgress| {
        if let Some(b) = &bar {
            if let Some(total) = p.total {
                b.set_length(total as u64);
            }
            if p.done <= 1 {
                b.reset();
                b.set_message(match p.pass {
                    Pass::Analyse => "shots",
                    Pass::Restore => "restoring",
                });
            }
            b.set_position(p.done as u64);
        }
    };
    let control = Control {
        cancel: Some(cancel),
        ..Control::default()
    };
    let result = video::restore_source(&pipeline, &source, &args.output, &opts, &control, &progress);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    result.map(VideoDone::Written)
}

/// `diffir restore INPUT -o OUTPUT --format y4m`: INPUT and OUTPUT are `-` (a pipe) or files.
pub(super) fn restore_y4m(
    args: &super::args::RestoreArgs,
    bundle: crate::Bundle,
    options: &crate::RestoreOptions,
    input: &Path,
) -> Result<usize> {
    if args.mask.is_some() || args.tta {
        return Err(Error::Usage(
            "--format y4m restores frames on their own: no --mask or --tta".into(),
        ));
    }
    let to_stdout = args.output.as_os_str() == "-";
    if to_stdout && std::io::stdout().is_terminal() {
        return Err(Error::input(
            "-",
            "standard output is a terminal; redirect it to a file or a pipe",
        ));
    }
    // Ctrl-C is handled from here on, and a stalled pipe cannot keep it waiting.
    let cancel = crate::interrupt::install();
    let reader: Box<dyn std::io::Read> = if input.as_os_str() == "-" {
        Box::new(crate::interrupt::InterruptibleStdin::new())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(input).map_err(|e| Error::io(input, e))?,
        ))
    };
    let pipeline = args.engine.open(bundle, options)?;
    let control = Control {
        cancel: Some(cancel),
        ..Control::default()
    };
    let finish = Finish {
        outscale: args.outscale,
        tta: false,
    };
    let quiet = args.engine.quiet;
    let mut on_frame = |n: usize| {
        if !quiet && std::io::stderr().is_terminal() {
            eprint!("\r{n} frame(s)");
        }
    };
    let restore = |out: &mut dyn std::io::Write| {
        video::y4m::restore_stream(&pipeline, reader, out, finish, &control, &mut on_frame)
    };
    let report = if to_stdout {
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let r = restore(&mut out)?;
        std::io::Write::flush(&mut out).map_err(|e| Error::io("-", e))?;
        r
    } else {
        if args.skip(&args.output)? {
            return Ok(0);
        }
        crate::image_io::write_atomically(&args.output, args.overwrite, |out| restore(out))?
    };
    if !quiet {
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
        for n in &report.notes {
            eprintln!("note: {n}");
        }
    }
    Ok(report.frames)
}
