//! Command line: clap parsing → validated options → library calls → exit code.

use clap::{Parser, Subcommand};

use crate::error::Result;

/// Exit codes.
pub const EXIT_OK: i32 = 0;
pub const EXIT_SOME_FAILED: i32 = 1;
/// Exit code of a run stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: i32 = 130;
pub const EXIT_USAGE: i32 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "diffir",
    version,
    about = "Restore images with DiffIR models (super-resolution, deblurring, inpainting)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Restore images (files or folders) with a model bundle.
    Restore(RestoreArgs),
    /// Describe a model bundle.
    Info(InfoArgs),
    /// Time whole restores of a synthetic image (no file I/O), per stage.
    Bench(BenchArgs),
    /// List the models installed in the models folder ($DIFFIR_MODELS_DIR), usable by name with -n.
    Models,
    /// Serve models over HTTP (image in, image out; KServe v2; health, readiness, metrics) until SIGTERM.
    #[cfg(feature = "serve")]
    Serve(ServeArgs),
    /// Write a Triton Inference Server model repository for a model: NAME_prior and NAME_backbone.
    TritonRepo(TritonRepoArgs),
    /// Restore a video (through ffmpeg; audio and subtitles copied) or a folder of frames.
    Video(VideoArgs),
}

mod args;
mod bench;
mod info;
mod jobs;
mod report;
mod restore;
#[cfg(feature = "serve")]
mod serve;
mod stream;
mod triton_repo;
mod video;

use args::RestoreArgs;
use bench::{bench, BenchArgs};
use info::{info, models, InfoArgs};
use restore::restore;
#[cfg(feature = "serve")]
use serve::{serve, ServeArgs};
use triton_repo::{triton_repo, TritonRepoArgs};
use video::{run_video, VideoArgs, VideoDone};

fn print_or_fail(result: Result<String>) -> i32 {
    match result {
        Ok(text) => {
            print!("{text}");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_USAGE
        }
    }
}

/// Parse arguments, run, and return the process exit code.
pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
        }
    };
    match cli.command {
        Command::Info(args) => print_or_fail(info(&args)),
        Command::Bench(args) => print_or_fail(bench(&args)),
        Command::Models => print_or_fail(Ok(models())),
        Command::TritonRepo(args) => print_or_fail(triton_repo(&args)),
        #[cfg(feature = "serve")]
        Command::Serve(args) => match serve(&args) {
            Ok(()) => EXIT_OK,
            Err(e) => {
                eprintln!("error: {e}");
                EXIT_USAGE
            }
        },
        Command::Video(args) => {
            let clock = std::time::Instant::now();
            match run_video(&args) {
                Ok(VideoDone::Skipped) => {
                    if !args.engine.quiet {
                        eprintln!("skipped: {} exists", crate::names::escaped(&args.output));
                    }
                    EXIT_OK
                }
                Ok(VideoDone::Written(report)) => {
                    if !args.engine.quiet {
                        for n in &report.notes {
                            eprintln!("note: {n}");
                        }
                        let shots = if report.shots.is_empty() {
                            String::new()
                        } else {
                            format!(" in {} shot(s)", report.shots.len())
                        };
                        eprintln!(
                            "{} frame(s){shots} restored in {:.1} s: {}",
                            report.frames,
                            clock.elapsed().as_secs_f64(),
                            crate::names::escaped(&report.output)
                        );
                    }
                    EXIT_OK
                }
                Err(crate::error::Error::Cancelled) => {
                    eprintln!("interrupted: nothing written");
                    EXIT_INTERRUPTED
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    EXIT_USAGE
                }
            }
        }
        Command::Restore(args) => {
            let clock = std::time::Instant::now();
            match restore(&args) {
                Ok(report) => {
                    let ok = report.failed.is_empty() && report.interrupted.is_none();
                    if !(ok && args.engine.quiet) {
                        eprintln!("{}", report.summary(clock.elapsed().as_secs_f64(), &args.output));
                    }
                    if report.interrupted.is_some() {
                        EXIT_INTERRUPTED
                    } else if ok {
                        EXIT_OK
                    } else {
                        EXIT_SOME_FAILED
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    EXIT_USAGE
                }
            }
        }
    }
}
