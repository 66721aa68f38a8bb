//! `diffir restore` over files and folders: model errors stop the batch, an input's error is reported
//! and the batch goes on.

use std::io::IsTerminal;
use std::path::PathBuf;

use super::args::RestoreArgs;
use super::jobs::{plan_jobs, Job};
use super::report::{error_line, BatchReport};
use super::stream::restore_stream;
use crate::error::{Error, Result};
use crate::image_io;
use crate::options::Noise;
use crate::pipeline::{Control, Progress};

/// What happened to one input.
enum Done {
    Written,
    Skipped,
}

/// `diffir restore`: model errors stop everything (Err); per-input errors are collected and the batch goes on.
pub fn restore(args: &RestoreArgs) -> Result<BatchReport> {
    let mut options = args.engine.options()?;
    let bundle = args.model.bundle()?;
    options.noise = match &args.init_noise {
        Some(p) => Noise::Values(image_io::read_noise(p, bundle.ipr_dim())?),
        None => Noise::Seed(args.seed),
    };
    options.max_pixels = args.max_pixels;
    options.jpeg_quality = args.jpeg_quality;
    let mask = args
        .mask
        .as_deref()
        .map(|m| image_io::read_mask(m, args.max_pixels))
        .transpose()?;
    bundle.task().check_mask(mask.is_some()).map_err(Error::Mask)?;
    let inputs: Vec<PathBuf> = args.inputs.iter().chain(&args.input).cloned().collect();
    if args.format.as_deref() == Some("y4m") {
        return restore_y4m_stream(args, bundle, &options, &inputs);
    }
    let stdin = inputs.iter().any(|p| p.as_os_str() == "-");
    if stdin || args.output.as_os_str() == "-" {
        return restore_stream(args, bundle, &options, &inputs, mask.as_ref());
    }
    let mut notes = vec![];
    let jobs = plan_jobs(
        &inputs,
        &args.output,
        args.format.as_deref(),
        args.suffix.as_deref(),
        &mut notes,
    )?;
    if !args.engine.quiet {
        for n in &notes {
            eprintln!("note: {n}");
        }
    }
    if jobs.is_empty() {
        return Err(Error::input(&inputs[0], "no image files found"));
    }
    let pipeline = args.engine.open(bundle, &options)?;
    // The bar counts images in a batch, and tiles when there is one image (both with an ETA).
    let per_tile = jobs.len() == 1;
    let bar = if std::io::stderr().is_terminal() && !args.engine.quiet {
        let b = indicatif::ProgressBar::new(jobs.len() as u64);
        let unit = if per_tile { "tiles" } else { "images" };
        b.set_style(
            indicatif::ProgressStyle::with_template(&format!(
                "{{bar:30}} {{pos}}/{{len}} {unit} {{elapsed_precise}} ETA {{eta}} {{wide_msg}}"
            ))
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    let tile_progress = |p: Progress| {
        if let Some(b) = &bar {
            b.set_length(p.tiles_total as u64);
            b.set_position(p.tiles_done as u64);
        }
    };
    let interrupt = crate::interrupt::install();
    let control = Control {
        cancel: Some(interrupt),
        progress: if per_tile && bar.is_some() {
            Some(&tile_progress)
        } else {
            None
        },
        ..Control::default()
    };
    let say = |line: String| match &bar {
        Some(b) => b.println(line),
        None => eprintln!("{line}"),
    };
    let run_job = |job: &Job| -> Result<Done> {
        if args.skip(&job.output)? {
            return Ok(Done::Skipped);
        }
        let notes = pipeline.restore_file(
            &job.input,
            &job.output,
            mask.as_ref(),
            args.finish(),
            &control,
            args.overwrite,
        )?;
        if !args.engine.quiet {
            for note in notes {
                say(format!("note: {}: {note}", crate::names::escaped(&job.input)));
            }
        }
        Ok(Done::Written)
    };
    // With several GPUs, that many images are in flight at once (each one's tiles spread over the devices
    // too), so a batch of small images keeps every device busy.
    let lanes = pipeline.plan().devices.len().clamp(1, jobs.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let outcomes = std::sync::Mutex::new(Vec::with_capacity(jobs.len()));
    let lane = || {
        use std::sync::atomic::Ordering;
        while !stop.load(Ordering::SeqCst) && !crate::interrupt::interrupted() {
            let i = next.fetch_add(1, Ordering::SeqCst);
            let Some(job) = jobs.get(i) else { break };
            if let Some(b) = &bar {
                b.set_message(crate::names::escaped(&job.input));
            }
            let result = run_job(job);
            match &result {
                Err(Error::Cancelled) => {}
                Err(e) if e.is_model_error() => stop.store(true, Ordering::SeqCst),
                Err(e) => say(error_line(&job.input, e)),
                Ok(_) => {}
            }
            if let (Some(b), false) = (&bar, per_tile) {
                b.inc(1);
            }
            outcomes.lock().unwrap_or_else(|e| e.into_inner()).push((i, result));
        }
    };
    if lanes > 1 {
        std::thread::scope(|scope| {
            for _ in 0..lanes {
                scope.spawn(lane);
            }
        });
    } else {
        lane();
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut outcomes = outcomes.into_inner().unwrap_or_else(|e| e.into_inner());
    outcomes.sort_by_key(|(i, _)| *i);
    let mut report = BatchReport::default();
    for (i, result) in outcomes {
        match result {
            Ok(Done::Written) => report.done += 1,
            Ok(Done::Skipped) => report.skipped += 1,
            Err(Error::Cancelled) => {}
            Err(e) if e.is_model_error() => return Err(e),
            Err(e) => report.failed.push((jobs[i].input.clone(), e.to_string())),
        }
    }
    if crate::interrupt::interrupted() {
        report.interrupted = Some(jobs.len() - report.done - report.skipped - report.failed.len());
    }
    Ok(report)
}

/// `restore --format y4m`: one YUV4MPEG2 stream in, one out.
fn restore_y4m_stream(
    args: &RestoreArgs,
    bundle: crate::Bundle,
    options: &crate::RestoreOptions,
    inputs: &[PathBuf],
) -> Result<BatchReport> {
    let [input] = inputs else {
        return Err(Error::Usage(
            "--format y4m takes one input stream ('-' or a .y4m file)".into(),
        ));
    };
    let mut report = BatchReport::default();
    match super::video::restore_y4m(args, bundle, options, input) {
        Ok(frames) => report.done = frames,
        Err(Error::Cancelled) => report.interrupted = Some(0),
        Err(e) => return Err(e),
    }
    Ok(report)
}
