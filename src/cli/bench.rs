//! `diffir bench`: time whole restores of a synthetic image, per stage, or tract's operators.

use clap::Args;

use super::args::{EngineArgs, ModelArg};
use crate::backend::BackendKind;
use crate::error::{Error, Result};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Input (LR) size, HxW.
    #[arg(long, default_value = "128x128", value_parser = parse_size)]
    pub size: (usize, usize),
    /// Timed runs after one warm-up run.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Instead of whole restores, time each operator of tract's optimised backbone plan on one tile (the whole
    /// --size with --tile 0) and print the operators by time (--backend tract only).
    #[arg(long)]
    pub op_profile: bool,
}

fn parse_size(s: &str) -> std::result::Result<(usize, usize), String> {
    let (h, w) = s.split_once(['x', 'X']).ok_or_else(|| format!("'{s}' is not HxW"))?;
    let p = |v: &str| {
        v.trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("'{s}' is not HxW"))
    };
    Ok((p(h)?, p(w)?))
}

/// `diffir bench --op-profile`: tract's backbone plan, timed per operator.
fn op_profile(args: &BenchArgs) -> Result<String> {
    let options = args.engine.options()?;
    if options.backend != BackendKind::Tract {
        return Err(Error::Usage(format!(
            "--op-profile times tract's plan: use it with --backend tract (not {})",
            options.backend
        )));
    }
    let bundle = args.model.bundle()?;
    let pipeline = args.engine.start(bundle.clone())?;
    let m = bundle.spec.size_multiple;
    let (h, w) = match pipeline.tiling().tile {
        0 => (
            crate::tiling::round_up(args.size.0, m),
            crate::tiling::round_up(args.size.1, m),
        ),
        t => {
            let t = crate::tiling::round_up(t, m);
            (t, t)
        }
    };
    let threads = pipeline.plan().threads;
    let c = bundle.spec.input_channels;
    let ops = crate::bench::tract_op_profile(&bundle, (h, w), threads, args.runs)?;
    let total: f64 = ops.iter().map(|o| o.secs).sum();
    let mut out = format!(
        "model {}, tract backbone plan on 1x{c}x{h}x{w}, {threads} thread(s), mean of {} runs after 1 warm-up: \
         {:.1} ms in its operators\n{:>28} {:>6} {:>10} {:>7}\n",
        bundle.spec.name,
        args.runs.max(1),
        total * 1e3,
        "operator",
        "nodes",
        "ms",
        "share"
    );
    for o in &ops {
        out += &format!(
            "{:>28} {:>6} {:>10.2} {:>6.1}%\n",
            o.op,
            o.nodes,
            o.secs * 1e3,
            100.0 * o.secs / total.max(f64::MIN_POSITIVE)
        );
    }
    Ok(out)
}

/// `diffir bench`: returns the text to print.
pub fn bench(args: &BenchArgs) -> Result<String> {
    if args.op_profile {
        return op_profile(args);
    }
    let bundle = args.model.bundle()?;
    let pipeline = args.engine.start(bundle)?;
    let (h, w) = args.size;
    let report = crate::bench::bench(&pipeline, h, w, args.runs, &pipeline.tiling())?;
    let mut out = format!(
        "model {} ({} x{}), input {h}x{w}, {} tile(s), plan [{}], {} runs after 1 warm-up\n",
        pipeline.bundle().spec.name,
        pipeline.bundle().task(),
        pipeline.bundle().scale(),
        report.tiles,
        pipeline.plan(),
        report.runs.len()
    );
    for (name, d) in report.median_stages() {
        out += &format!("{name:>16}: {:9.2} ms\n", d.as_secs_f64() * 1e3);
    }
    out += &format!("median: {:.2} ms\n", report.median_total().as_secs_f64() * 1e3);
    Ok(out)
}
