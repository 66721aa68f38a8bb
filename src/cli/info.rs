//! `diffir info` and `diffir models`: what a model is, what runs it here, and what is installed.

use clap::Args;

use super::args::{EngineArgs, ModelArg};
use crate::backend::BackendKind;
use crate::bundle::{Bundle, Precision};
use crate::error::Result;
use crate::pipeline::Pipeline;
use crate::plan::TileRequest;

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// With --backend: also start that backend and print its plan (provider, devices, workers x threads,
    /// tile, tiles per batch).
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `diffir models`: the built-in model and what the models folder holds.
pub fn models() -> String {
    let mut out = format!(
        "built-in  {} (sr x4; used when no --model is given)\nfolder    {}\n",
        crate::builtin::NAME,
        crate::models::models_dir().display()
    );
    let installed = crate::models::installed();
    if installed.is_empty() {
        out +=
            "          (no models installed: python -m diffir_export export ... --out \"$DIFFIR_MODELS_DIR/NAME\")\n";
    }
    for (name, path, bundle) in installed {
        out += &match bundle {
            Ok(b) => format!(
                "{name:<9} {} x{}, precisions {}, {}\n",
                b.task(),
                b.scale(),
                b.precisions().iter().map(|p| p.as_str()).collect::<Vec<_>>().join("/"),
                path.display()
            ),
            Err(e) => format!("{name:<9} unusable: {e}\n"),
        };
    }
    out
}

/// The devices onnxruntime offers here (the CPU provider's and those of the plugins that load), one line
/// each, and why a plugin is missing.
fn onnxruntime_devices() -> String {
    let survey = match crate::backend::plugin::survey() {
        Ok(s) => s,
        Err(e) => return format!("onnxruntime:    not loaded ({e})\n"),
    };
    let mut out = String::new();
    let mut notes = String::new();
    for (p, loaded, why) in &survey.plugins {
        match loaded {
            Ok(path) => out += &format!("plugin:         {} from {}\n", p.name(), path.display()),
            Err(_) => out += &format!("plugin:         {} not installed ({})\n", p.name(), p.install_hint()),
        }
        if let Some(why) = why {
            notes += &format!("note:           {why}\n");
        }
    }
    match survey.devices {
        Ok(devices) => {
            for d in devices {
                out += &format!("device:         {} ({}, {}, id {})\n", d.ep, d.kind, d.vendor, d.id);
            }
        }
        Err(e) => out += &format!("device:         none listed ({e})\n"),
    }
    out += &notes;
    out
}

/// The activation line of `diffir info`: the peak memory of one backbone call's activations at `tile`
/// (input pixels, rounded to the size multiple), `batch` tiles per call and `precision`, from the graph.
fn activations_line(bundle: &Bundle, tile: usize, batch: usize, precision: Precision) -> String {
    let m = bundle.spec.size_multiple.max(1);
    let t = crate::tiling::round_up(tile, m);
    match crate::activations::backbone(bundle, batch, (t, t), precision) {
        Ok(p) => format!(
            "activations: {:.0} MiB (one backbone call of {batch} tile(s) of {t}x{t}, {precision}; peak at {})\n",
            p.bytes as f64 / (1u64 << 20) as f64,
            p.at
        ),
        Err(e) => format!("activations: unknown ({e})\n"),
    }
}

/// `diffir info`.
pub fn info(args: &InfoArgs) -> Result<String> {
    let bundle = args.model.bundle()?;
    let mut out = bundle.describe();
    out += &format!(
        "precisions:     {}\n",
        bundle
            .precisions()
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    out += &onnxruntime_devices();
    let kind = args.engine.kind()?;
    if matches!(
        kind,
        BackendKind::OrtCuda | BackendKind::OrtTensorrt | BackendKind::Auto | BackendKind::Ort
    ) {
        for line in crate::gpus::Devices::probe().describe() {
            out += &format!("gpu:            {line}\n");
        }
    }
    if matches!(kind, BackendKind::OrtCuda | BackendKind::OrtTensorrt) {
        if let Some(lib) = crate::backend::ort::library_path() {
            for line in crate::backend::cuda_libs::preload(&lib).lines() {
                out += &format!("{line}\n");
            }
        }
    }
    // --tile, --tile-batch and --precision as given (the default tile for auto or the whole image).
    let options = args.engine.options()?;
    let tile = match options.tile {
        TileRequest::Pixels(t) => t,
        _ => crate::tiling::DEFAULT_TILE,
    };
    out += &activations_line(&bundle, tile, options.tile_batch.unwrap_or(1), options.precision);
    if args.engine.backend.is_some() || args.engine.triton_url.is_some() {
        match Pipeline::open(bundle, &options) {
            Ok(pipeline) => {
                out += &format!("runs on:        {}\n", pipeline.backend().runs_on);
                out += &format!("{}\n", pipeline.backend().line(crate::plan::Words::Flags));
            }
            Err(e) => {
                // What was learnt so far still helps to see why.
                print!("{out}");
                return Err(e);
            }
        }
    }
    Ok(out)
}
