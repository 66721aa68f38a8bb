//! Command line: clap parsing → validated options → library calls → exit code.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::backend::BackendKind;
use crate::bundle::{Bundle, GraphKind, Precision};
use crate::error::{Error, Result};
use crate::image_io;
use crate::options::{Noise, RestoreOptions};
use crate::pipeline::{Control, Finish, Pipeline, Progress, Tiling};
use crate::plan::{DeviceList, TileRequest};

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
    Serve(ServeArgs),
    /// Write a Triton Inference Server model repository for a model: NAME_prior and NAME_backbone.
    TritonRepo(TritonRepoArgs),
}

/// `diffir triton-repo`.
#[derive(Debug, Args)]
pub struct TritonRepoArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// The repository folder (created if needed; other models in it are kept).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Model name prefix: the models are NAME_prior and NAME_backbone [default: the bundle's name].
    #[arg(long)]
    pub name: Option<String>,
    /// The backbone tile clients send, in input pixels (recorded in the backbone's config).
    #[arg(short = 't', long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(8..=4096))]
    pub tile: u32,
    /// The backbone's max_batch_size: tiles per server-side batch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub max_batch: u32,
    /// Model instances (per GPU with --gpu).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub instances: u32,
    /// Instances on the GPUs (the default).
    #[arg(long, conflicts_with = "cpu")]
    pub gpu: bool,
    /// Instances on the CPU.
    #[arg(long)]
    pub cpu: bool,
    /// Add Triton's TensorRT execution accelerator to both models (not run by diffir's tests).
    #[arg(long)]
    pub tensorrt: bool,
    /// Replace models of the same names in the repository.
    #[arg(long)]
    pub overwrite: bool,
}

/// `diffir triton-repo`: write the repository and say what was written.
pub fn triton_repo(args: &TritonRepoArgs) -> Result<String> {
    let bundle = args.model.bundle()?;
    let opts = crate::triton::RepoOptions {
        name: args.name.clone(),
        tile: args.tile as usize,
        max_batch: args.max_batch as usize,
        instances: args.instances as usize,
        kind: if args.cpu {
            crate::triton::InstanceKind::Cpu
        } else {
            crate::triton::InstanceKind::Gpu
        },
        tensorrt: args.tensorrt,
        overwrite: args.overwrite,
    };
    let written = crate::triton::repo::write(&bundle, &args.out, &opts)?;
    let mut out = String::new();
    for dir in written {
        out += &format!("wrote {}\n", dir.display());
    }
    Ok(out)
}

/// The model of `restore`, `bench` and `info`.
#[derive(Debug, Args)]
pub struct ModelArg {
    /// Model: a bundle folder, or the name of one in the models folder ($DIFFIR_MODELS_DIR, default
    /// ~/.local/share/diffir/models; `diffir models` lists them). Default: the built-in x4 model.
    #[arg(short = 'n', long)]
    pub model: Option<PathBuf>,
}

impl ModelArg {
    fn bundle(&self) -> Result<Bundle> {
        load_model(self.model.as_deref())
    }
}

/// A bundle folder or an installed model's name; None: the built-in model.
pub fn load_model(model: Option<&Path>) -> Result<Bundle> {
    match model {
        Some(m) => Bundle::load(crate::models::resolve(m)?),
        None => Bundle::builtin(),
    }
}

/// Backend, plan and tiling options shared by `restore`, `bench`, `info` and `serve`.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// ort: onnxruntime with the best provider that starts (TensorRT, CUDA, CPU); ort-cpu/ort-cuda/ort-tensorrt/
    /// ort-openvino/ort-webgpu: that provider only (the last two are plugins, --ep-library). auto: TensorRT, CUDA, onnxruntime CPU, then tract, whichever starts first [default: auto].
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(BackendKind::NAMES))]
    pub backend: Option<String>,
    /// Threads to use in all (0 = every core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Tiles run at once (default: one per thread on the CPU, one per GPU).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Memory the CPU plan may use in all (8G, 512M, …): workers beyond what fits are not started, and their
    /// threads go to the others [default: half of the available memory].
    #[arg(long, value_parser = crate::plan::parse_bytes)]
    pub max_memory: Option<u64>,
    /// GPUs for the CUDA and TensorRT backends: an index, a list (0,1) or all; one engine per GPU.
    #[arg(short = 'g', long, default_value = "0", value_parser = |s: &str| s.parse::<DeviceList>())]
    pub device: DeviceList,
    /// Backbone precision: fp16 runs the bundle's fp16 backbone (CUDA, onnxruntime CPU) or TensorRT's fp16
    /// engines; tiles whose output has NaN/Inf are redone in fp32.
    #[arg(long, default_value = "fp32", value_parser = clap::builder::PossibleValuesParser::new(Precision::NAMES))]
    pub precision: String,
    /// Same as --precision fp16.
    #[arg(long, hide = true)]
    pub fp16: bool,
    /// Backbone tile in input pixels (rounded up to the model's size multiple); 0 = whole image; auto = 128 on
    /// the CPU, the largest tile and batch that fit the GPU's free memory on a GPU.
    #[arg(short = 't', long, default_value = "auto", value_parser = clap::value_parser!(TileRequest))]
    pub tile: TileRequest,
    /// Backbone tiles per call (default: 1 on the CPU; on a GPU, what --tile auto fits, else 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub tile_batch: Option<u32>,
    /// Overlap between backbone tiles in input pixels (at most half a tile), feathered.
    #[arg(long, default_value_t = crate::pipeline::DEFAULT_TILE_OVERLAP)]
    pub tile_overlap: usize,
    /// onnxruntime CUDA provider option, e.g. prefer_nhwc=1 or cudnn_conv_algo_search=HEURISTIC (repeatable).
    #[arg(long = "cuda-option", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub cuda_options: Vec<(String, String)>,
    /// Option of the plugin providers (ort-openvino, ort-webgpu): device=cpu|gpu|npu picks the plugin's
    /// device (default: OpenVINO's CPU, WebGPU's first adapter); other keys go to the plugin (repeatable).
    #[arg(long = "ep-option", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub ep_options: Vec<(String, String)>,
    /// The plugin library of ort-openvino or ort-webgpu [default: $DIFFIR_OPENVINO_LIBRARY or
    /// $DIFFIR_WEBGPU_LIBRARY, else the install folder of scripts/install-onnxruntime.sh, else the pip package].
    #[arg(long, value_name = "PATH")]
    pub ep_library: Option<PathBuf>,
    /// CUDA: bind the fixed-shape backbone to device memory and capture it as a CUDA graph (same as
    /// --cuda-option enable_cuda_graph=1). Not yet run on a GPU.
    #[arg(long)]
    pub cuda_graph: bool,
    /// Exit with an error (code 2) instead of running anywhere but an NVIDIA GPU: where the CUDA provider
    /// cannot start, `auto` would run on the CPU (with a warning where this machine has a GPU).
    #[arg(long)]
    pub require_gpu: bool,
    /// The Triton server of --backend triton: grpc://HOST:PORT (giving it implies --backend triton).
    #[arg(long, value_name = "URL")]
    pub triton_url: Option<String>,
    /// The model prefix on the Triton server (NAME_prior, NAME_backbone) [default: the bundle's name].
    #[arg(long, value_name = "NAME")]
    pub triton_model: Option<String>,
    /// Deadline of each Triton request, in seconds.
    #[arg(long, default_value_t = 120.0, value_name = "SECONDS", value_parser = parse_seconds)]
    pub triton_timeout: f64,
    /// How long an unavailable Triton server is retried before an image fails, in seconds.
    #[arg(long, default_value_t = 15.0, value_name = "SECONDS", value_parser = parse_seconds)]
    pub triton_retry: f64,
    /// Write nothing to disk: neither read nor store onnxruntime's optimised graphs and TensorRT's engines in
    /// the cache folder ($DIFFIR_CACHE_DIR, else $XDG_CACHE_HOME/diffir or ~/.cache/diffir), for read-only
    /// deployments; every start optimises again.
    #[arg(long)]
    pub no_cache: bool,
    /// Say more: the library's path, each backend skipped and why.
    #[arg(short, long, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
}

fn parse_outscale(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 16.0 => Ok(v),
        _ => Err(format!("'{s}' is not a scale in (0, 16]")),
    }
}

fn parse_key_value(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => Ok((k.trim().into(), v.trim().into())),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

impl clap::builder::ValueParserFactory for TileRequest {
    type Parser = fn(&str) -> std::result::Result<TileRequest, String>;
    fn value_parser() -> Self::Parser {
        |s| s.parse()
    }
}

impl EngineArgs {
    fn kind(&self) -> Result<BackendKind> {
        let default = if self.triton_url.is_some() { "triton" } else { "auto" };
        let kind: BackendKind = self
            .backend
            .as_deref()
            .unwrap_or(default)
            .parse()
            .map_err(Error::Backend)?;
        if self.triton_url.is_some() && kind != BackendKind::Triton {
            return Err(Error::Backend(format!(
                "--triton-url is for --backend triton, not --backend {kind}"
            )));
        }
        Ok(kind)
    }

    /// The Triton options of --backend triton.
    fn triton_options(&self) -> Result<crate::triton::TritonOptions> {
        let Some(url) = &self.triton_url else {
            return Err(Error::Backend(
                "--backend triton needs --triton-url grpc://HOST:PORT".into(),
            ));
        };
        let mut opts = crate::triton::TritonOptions::new(url.clone());
        opts.model = self.triton_model.clone();
        opts.timeout = std::time::Duration::from_secs_f64(self.triton_timeout.max(0.001));
        opts.retry_for = std::time::Duration::from_secs_f64(self.triton_retry);
        Ok(opts)
    }

    /// The CUDA provider options, `--cuda-graph` included.
    fn cuda_options(&self) -> Vec<(String, String)> {
        let mut out = self.cuda_options.clone();
        if self.cuda_graph {
            out.push(("enable_cuda_graph".into(), "1".into()));
        }
        out
    }

    /// The library options these flags mean (the noise and input limits keep their defaults; `restore` sets
    /// them from its own flags).
    pub fn options(&self) -> Result<RestoreOptions> {
        let kind = self.kind()?;
        let precision = if self.fp16 {
            Precision::Fp16
        } else {
            self.precision.parse().map_err(Error::Backend)?
        };
        Ok(RestoreOptions {
            backend: kind,
            devices: self.device.0.clone(),
            threads: self.threads,
            workers: self.workers,
            max_memory: self.max_memory,
            precision,
            tile: self.tile,
            tile_overlap: self.tile_overlap,
            tile_batch: self.tile_batch.map(|b| b as usize),
            cuda_options: self.cuda_options(),
            ep_options: self.ep_options.clone(),
            ep_library: self.ep_library.clone(),
            require_gpu: self.require_gpu,
            triton: if kind == BackendKind::Triton {
                Some(self.triton_options()?)
            } else {
                None
            },
            ..RestoreOptions::default()
        })
    }

    /// Start the backend for `bundle`, say which (with its plan) on stderr, and return the pipeline and the
    /// tiling its plan chose.
    pub fn start(&self, bundle: Bundle) -> Result<(Pipeline, Tiling)> {
        self.open(bundle, &self.options()?)
    }

    /// `start` with options the caller completed (noise, limits).
    pub fn open(&self, bundle: Bundle, options: &RestoreOptions) -> Result<(Pipeline, Tiling)> {
        if self.no_cache {
            crate::backend::optimised_cache::disable_disk_cache();
        }
        let pipeline = Pipeline::open(bundle, options)?;
        if self.verbose {
            eprintln!("{}", pipeline.backend_line());
        } else if !self.quiet {
            eprintln!("{}", pipeline.backend_summary());
        }
        let tiling = pipeline.tiling();
        Ok((pipeline, tiling))
    }
}

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
    use crate::backend::tract::TractEngine;
    use crate::backend::{EngineOptions, Input};
    let options = args.engine.options()?;
    if options.backend != BackendKind::Tract {
        return Err(Error::Backend(format!(
            "--op-profile times tract's plan: use it with --backend tract (not {})",
            options.backend
        )));
    }
    let bundle = args.model.bundle()?;
    let (pipeline, tiling) = args.engine.start(bundle.clone())?;
    let m = bundle.spec.size_multiple;
    let (h, w) = match tiling.tile {
        0 => (args.size.0.div_ceil(m) * m, args.size.1.div_ceil(m) * m),
        t => {
            let t = t.div_ceil(m) * m;
            (t, t)
        }
    };
    let threads = pipeline.plan().threads;
    let engine = TractEngine::new(
        &bundle,
        &EngineOptions {
            threads,
            workers: 1,
            ..Default::default()
        },
    )?;
    let (c, d) = (bundle.spec.input_channels, bundle.ipr_dim());
    // Timing does not depend on the values: the synthetic image's RGB planes, other channels zero.
    let rgb = crate::bench::synthetic_image(h, w);
    let image: Vec<f32> = (0..c)
        .flat_map(|ch| (0..h * w).map(move |px| (ch, px)))
        .map(|(ch, px)| if ch < 3 { rgb.data[px * 3 + ch] } else { 0.0 })
        .collect();
    let ipr = crate::sampler::seeded_noise(0, d);
    let inputs = [Input::F32(&[1, c, h, w], &image), Input::F32(&[1, d], &ipr)];
    let ops = engine.op_profile(GraphKind::Backbone, &inputs, args.runs)?;
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
    let (pipeline, tiling) = args.engine.start(bundle)?;
    let (h, w) = args.size;
    let report = crate::bench::bench(&pipeline, h, w, args.runs, &tiling)?;
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

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Input files or folders (folders are searched recursively for images; a symlinked folder is entered
    /// once, never twice).
    #[arg(required_unless_present = "input")]
    pub inputs: Vec<PathBuf>,
    /// Input file or folder, as other upscalers take it (repeatable; joins the positional inputs).
    #[arg(short = 'i', long = "input", value_name = "INPUT")]
    pub input: Vec<PathBuf>,
    /// Output file (one input file) or folder (several inputs or a folder; created, relative paths kept).
    #[arg(short, long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Seed of the initial prior noise (1 × ipr_dim standard normals). Every input uses the same draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Initial prior noise as a float32 .npy of shape 1 × ipr_dim (overrides --seed).
    #[arg(long, value_name = "FILE.npy")]
    pub init_noise: Option<PathBuf>,
    /// Inpainting mask (white = hole); same size as the input.
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Replace existing output files.
    #[arg(long, conflicts_with = "skip_existing")]
    pub overwrite: bool,
    /// Skip inputs whose output exists already (resume a batch); they are counted in the summary.
    #[arg(long)]
    pub skip_existing: bool,
    /// Add this to every output file name, before the extension (e.g. _x4); needed when -o is an input folder.
    #[arg(long, value_name = "SUFFIX")]
    pub suffix: Option<String>,
    /// Output format for folder runs (png, jpg, webp, tif, bmp, npy); default: each input's own format.
    #[arg(short = 'f', long, value_parser = clap::builder::PossibleValuesParser::new(image_io::OutputFormat::all_extensions()))]
    pub format: Option<String>,
    /// Resize the result to this many times the input's size (e.g. 2 from an x4 model), Lanczos.
    #[arg(long, value_name = "X", value_parser = parse_outscale)]
    pub outscale: Option<f64>,
    /// Self-ensemble: restore the 8 flips and rotations and average them (8x the time).
    #[arg(long)]
    pub tta: bool,
    /// JPEG quality (1-100).
    #[arg(long, default_value_t = image_io::DEFAULT_JPEG_QUALITY, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub jpeg_quality: u8,
    /// Refuse inputs with more pixels than this, before decoding them.
    #[arg(long, default_value_t = image_io::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A model to serve: a bundle folder or an installed model's name (served under its folder name), or
    /// NAME=MODEL (repeatable). Default: the built-in model, as diffir-x4-small.
    #[arg(long = "model", short = 'n', value_name = "[NAME=]MODEL")]
    pub models: Vec<String>,
    /// Address to listen on; port 0 lets the OS pick (the address is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Largest request body in bytes (413 above; a larger declared Content-Length is refused before reading).
    #[arg(long, default_value_t = 64 << 20)]
    pub max_body_bytes: usize,
    /// Seconds a request body may take to arrive in full (408 after it).
    #[arg(long, default_value_t = 60.0, value_parser = parse_seconds)]
    pub body_timeout: f64,
    /// Seconds a connection may take to send a request's headers, counted from when it opens or its last
    /// response was sent (also the idle timeout of keep-alive connections).
    #[arg(long, default_value_t = 20.0, value_parser = parse_seconds)]
    pub header_timeout: f64,
    /// Connections open at once; more wait in the listen backlog [default: 1024, or the open-files limit
    /// less 64 where that is lower].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
    /// Seconds open connections may take to finish after SIGTERM/SIGINT; then they are dropped and the
    /// server exits 0 (a second signal ends the wait at once).
    #[arg(long, default_value_t = 30.0, value_parser = parse_seconds)]
    pub shutdown_timeout: f64,
    /// Tile sizes a request may choose with `tile` (comma-separated, each at least 32; 0 among them allows
    /// whole images) [default: the plan's tile and its halves down to 64].
    #[arg(long, value_delimiter = ',', value_parser = parse_request_tile)]
    pub request_tiles: Vec<usize>,
    /// Let requests run whole images (tile=0); their memory estimate is still checked.
    #[arg(long)]
    pub allow_whole_image: bool,
    /// Largest input image in pixels, checked from its header before decoding (413 above).
    #[arg(long, default_value_t = 50_000_000)]
    pub max_pixels: u64,
    /// Restores running at once (each one uses the plan's workers and threads).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_concurrency: u32,
    /// Requests that may wait for a worker; beyond that the answer is 503 with Retry-After.
    #[arg(long, default_value_t = 16)]
    pub queue: usize,
    /// Deadline of a restore request in seconds (504 after it; the restore is stopped between tiles).
    #[arg(long, default_value_t = 300.0, value_parser = parse_seconds)]
    pub request_timeout: f64,
    /// File holding the bearer token every request but the health checks must send
    /// (Authorization: Bearer TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// JPEG quality of JPEG outputs (1-100).
    #[arg(long, default_value_t = image_io::DEFAULT_JPEG_QUALITY, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub jpeg_quality: u8,
}

fn parse_request_tile(s: &str) -> std::result::Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Ok(0),
        Ok(t) if t >= crate::serve::MIN_REQUEST_TILE => Ok(t),
        _ => Err(format!(
            "'{s}' is not a tile size of at least {} pixels (or 0)",
            crate::serve::MIN_REQUEST_TILE
        )),
    }
}

/// The open-files limit of this process (soft), where it can be read.
fn open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    (ok && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

fn parse_seconds(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number of seconds")),
    }
}

/// `diffir serve`: load every model once, then serve until SIGTERM/SIGINT.
pub fn serve(args: &ServeArgs) -> Result<()> {
    let token = match &args.token_file {
        Some(f) => {
            let t = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
            let t = t.trim().to_string();
            if t.is_empty() {
                return Err(Error::input(f, "the token file is empty"));
            }
            Some(t)
        }
        None => None,
    };
    let specs: Vec<(String, Option<PathBuf>)> = if args.models.is_empty() {
        vec![(crate::builtin::NAME.to_string(), None)]
    } else {
        args.models
            .iter()
            .map(|m| match m.split_once('=') {
                Some((name, dir)) if !name.is_empty() => (name.to_string(), Some(PathBuf::from(dir))),
                _ => {
                    let p = PathBuf::from(m);
                    let name = p
                        .file_name()
                        .map_or_else(|| m.clone(), |n| n.to_string_lossy().into_owned());
                    (name, Some(p))
                }
            })
            .collect()
    };
    let mut models = vec![];
    for (name, path) in specs {
        if models.iter().any(|m: &crate::serve::ServedModel| m.name == name) {
            return Err(Error::Backend(format!("model name '{name}' is given twice")));
        }
        let bundle = load_model(path.as_deref())?;
        let (pipeline, tiling) = args.engine.start(bundle)?;
        let mut request_tiles = if args.request_tiles.is_empty() {
            crate::serve::default_request_tiles(tiling.tile)
        } else {
            args.request_tiles.clone()
        };
        if args.allow_whole_image && !request_tiles.contains(&0) {
            request_tiles.insert(0, 0);
        }
        models.push(crate::serve::ServedModel {
            name,
            pipeline,
            tiling,
            request_tiles,
        });
    }
    let max_connections = match (args.max_connections, open_files_limit()) {
        (Some(n), _) => n as usize,
        (None, Some(files)) => files.saturating_sub(64).clamp(1, 1024) as usize,
        (None, None) => 1024,
    };
    // The backbone memory one restore may take on the CPU: the plan's budget shared by the restores that
    // run at once. GPU plans are bounded by their tile sizes instead.
    let on_cpu = models.iter().all(|m| m.pipeline.plan().devices.is_empty());
    let memory_per_restore = on_cpu
        .then(|| crate::plan::cpu_budget(args.engine.max_memory, crate::plan::available_memory()))
        .flatten()
        .map(|(b, _)| b / args.max_concurrency.max(1) as f64);
    let opts = crate::serve::ServeOptions {
        listen: args.listen,
        body_timeout: std::time::Duration::from_secs_f64(args.body_timeout),
        conn: crate::serve::ConnLimits {
            max_connections,
            header_timeout: std::time::Duration::from_secs_f64(args.header_timeout),
            shutdown_timeout: std::time::Duration::from_secs_f64(args.shutdown_timeout),
        },
        memory_per_restore,
        max_body_bytes: args.max_body_bytes,
        max_pixels: args.max_pixels,
        max_concurrency: args.max_concurrency as usize,
        queue: args.queue,
        request_timeout: std::time::Duration::from_secs_f64(args.request_timeout),
        token,
        jpeg_quality: args.jpeg_quality,
    };
    crate::serve::run(models, opts)
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// With --backend: also start that backend and print its plan (provider, devices, workers x threads,
    /// tile, tiles per batch).
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// One input and where its result goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub input: PathBuf,
    pub output: PathBuf,
}

/// Expand inputs (folders recursively, image files only, sorted) and map each to its output path; `format`
/// replaces the extension in folder runs and `suffix` is added to every output name. A folder reached twice
/// (a symlink loop, or two links to one folder) is entered once; `notes` says which were skipped.
pub fn plan_jobs(
    inputs: &[PathBuf],
    output: &Path,
    format: Option<&str>,
    suffix: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<Vec<Job>> {
    if let Some(missing) = inputs.iter().find(|p| !p.exists()) {
        return Err(Error::input(missing, "no such file or folder"));
    }
    let single_file = inputs.len() == 1 && inputs[0].is_file();
    let jobs = if single_file {
        let out = if output.is_dir() {
            output.join(output_name(&inputs[0], format, suffix))
        } else {
            output.to_path_buf()
        };
        vec![Job {
            input: inputs[0].clone(),
            output: out,
        }]
    } else {
        if output.is_file() {
            return Err(Error::input(
                output,
                "several inputs need an output folder, and this is a file",
            ));
        }
        let mut jobs = vec![];
        let mut visited = std::collections::HashSet::new();
        for input in inputs {
            if input.is_dir() {
                let mut files = vec![];
                collect(input, &mut files, &mut visited, notes).map_err(|e| Error::io(input, e))?;
                files.sort();
                for f in files {
                    let rel = f.strip_prefix(input).unwrap_or(&f).to_path_buf();
                    let out = output
                        .join(rel.parent().unwrap_or(Path::new("")))
                        .join(output_name(&f, format, suffix));
                    jobs.push(Job { input: f, output: out });
                }
            } else {
                jobs.push(Job {
                    input: input.clone(),
                    output: output.join(output_name(input, format, suffix)),
                });
            }
        }
        jobs
    };
    // Outputs never replace or collide with inputs (-o pointing into an input folder without --suffix).
    let canonical = |p: &Path| {
        let parent = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::canonicalize(parent)
            .ok()
            .map(|d| d.join(p.file_name().unwrap_or_default()))
    };
    let sources: std::collections::HashSet<PathBuf> = jobs.iter().filter_map(|j| canonical(&j.input)).collect();
    if let Some(j) = jobs
        .iter()
        .find(|j| canonical(&j.output).is_some_and(|o| sources.contains(&o)))
    {
        return Err(Error::input(
            &j.output,
            "this output is an input of the same run: choose another -o, or add --suffix (e.g. --suffix _x4)",
        ));
    }
    Ok(jobs)
}

fn output_name(input: &Path, ext: Option<&str>, suffix: Option<&str>) -> PathBuf {
    let mut name = PathBuf::from(input.file_name().unwrap_or_default());
    if let Some(sfx) = suffix {
        let stem = input.file_stem().unwrap_or_default().to_string_lossy();
        let mut n = format!("{stem}{sfx}");
        if let Some(e) = input.extension() {
            n += &format!(".{}", e.to_string_lossy());
        }
        name = PathBuf::from(n);
    }
    if let Some(ext) = ext {
        name.set_extension(ext);
    }
    name
}

fn collect(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    visited: &mut std::collections::HashSet<PathBuf>,
    notes: &mut Vec<String>,
) -> std::io::Result<()> {
    if !visited.insert(std::fs::canonicalize(dir)?) {
        notes.push(format!(
            "{}: not entered (this folder was reached already; symlink loop or second link)",
            crate::names::escaped(dir)
        ));
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        // Following symlinks, as reading does; a dangling link is left to the read to report.
        let kind = std::fs::metadata(&path).map(|m| m.file_type());
        if kind.as_ref().is_ok_and(|k| k.is_dir()) {
            collect(&path, out, visited, notes)?;
        } else if image_io::is_supported_input(&path) {
            if kind.as_ref().is_ok_and(|k| !k.is_file()) {
                // A FIFO would block the whole batch; sockets and devices are no images either.
                notes.push(format!(
                    "{}: skipped (not a regular file: a FIFO, socket or device)",
                    crate::names::escaped(&path)
                ));
                continue;
            }
            out.push(path);
        }
    }
    Ok(())
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
    use crate::backend::plugin;
    if let Err(e) = crate::backend::ort::load(false) {
        return format!("onnxruntime:    not loaded ({e})\n");
    }
    let mut out = String::new();
    let mut notes = String::new();
    for (p, r) in plugin::register_found() {
        match r {
            Ok(path) => {
                out += &format!("plugin:         {} from {}\n", p.name(), path.display());
                if let Some(why) = plugin::unavailable(p, &[]) {
                    notes += &format!("note:           {why}\n");
                }
            }
            Err(_) => out += &format!("plugin:         {} not installed ({})\n", p.name(), p.install_hint()),
        }
    }
    match plugin::devices() {
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
    let t = tile.div_ceil(m) * m;
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
        _ => crate::pipeline::DEFAULT_TILE,
    };
    out += &activations_line(&bundle, tile, options.tile_batch.unwrap_or(1), options.precision);
    if args.engine.backend.is_some() || args.engine.triton_url.is_some() {
        match Pipeline::open(bundle, &options) {
            Ok(pipeline) => {
                out += &format!("runs on:        {}\n", pipeline.runs_on());
                out += &format!("{}\n", pipeline.backend_line());
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

/// Outcome of a batch.
pub struct BatchReport {
    /// Outputs written.
    pub done: usize,
    /// Inputs skipped because their output exists (`--skip-existing`).
    pub skipped: usize,
    /// Inputs that failed, with why.
    pub failed: Vec<(PathBuf, String)>,
    /// Inputs not restored because Ctrl-C or SIGTERM stopped the run (Some: it was stopped).
    pub interrupted: Option<usize>,
}

impl BatchReport {
    /// The run's last line: images written, skipped and failed, the time, and where the outputs went.
    pub fn summary(&self, secs: f64, output: &Path) -> String {
        let output = crate::names::escaped(output);
        if let Some(left) = self.interrupted {
            return format!(
                "interrupted: {} done, {} failed, {left} not restored, in {secs:.1} s: {output}",
                self.done,
                self.failed.len()
            );
        }
        let skipped = if self.skipped > 0 {
            format!(", {} skipped (output exists)", self.skipped)
        } else {
            String::new()
        };
        if self.failed.is_empty() {
            format!("{} image(s) restored{skipped} in {secs:.1} s: {output}", self.done)
        } else {
            format!(
                "{} done{skipped}, {} failed, in {secs:.1} s: {output}",
                self.done,
                self.failed.len()
            )
        }
    }
}

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
    let noise = options.noise.values(bundle.ipr_dim());
    let mask = args
        .mask
        .as_deref()
        .map(|m| image_io::read_mask(m, args.max_pixels))
        .transpose()?;
    bundle.task().check_mask(mask.is_some()).map_err(Error::Mask)?;
    let inputs: Vec<PathBuf> = args.inputs.iter().chain(&args.input).cloned().collect();
    let stdin = inputs.iter().any(|p| p.as_os_str() == "-");
    if stdin || args.output.as_os_str() == "-" {
        return restore_stream(args, bundle, &options, &inputs, mask.as_ref(), &noise);
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
    let (pipeline, tiling) = args.engine.open(bundle, &options)?;
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
    };
    let say = |line: String| match &bar {
        Some(b) => b.println(line),
        None => eprintln!("{line}"),
    };
    let run_job = |job: &Job| -> Result<Done> {
        if args.skip(&job.output)? {
            return Ok(Done::Skipped);
        }
        let format = image_io::OutputFormat::from_path(&job.output)?;
        let picture = image_io::read_picture(&job.input, args.max_pixels)?;
        if !args.engine.quiet {
            for note in &picture.notes {
                say(format!("note: {}: {note}", crate::names::escaped(&job.input)));
            }
        }
        format.check_can_hold(&job.output, picture.alpha.is_some())?;
        let done = pipeline.restore_picture(&picture, mask.as_ref(), &noise, &tiling, args.finish(), &control)?;
        if !args.engine.quiet {
            for note in &done.restored.notes {
                say(format!("note: {}: {note}", crate::names::escaped(&job.input)));
            }
        }
        let carry = done.carry(&picture);
        let write = pipeline.write_options(args.overwrite);
        image_io::write_picture(&job.output, &done.image, &carry, &write).map(|()| Done::Written)
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
    let mut report = BatchReport {
        done: 0,
        skipped: 0,
        failed: vec![],
        interrupted: None,
    };
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

impl RestoreArgs {
    /// What happens to each result before it is written (--outscale, --tta).
    fn finish(&self) -> Finish {
        Finish {
            outscale: self.outscale,
            tta: self.tta,
        }
    }

    /// Whether to skip an output that exists (--skip-existing); an error if it exists without --overwrite.
    fn skip(&self, output: &Path) -> Result<bool> {
        if !output.exists() {
            return Ok(false);
        }
        if self.skip_existing {
            return Ok(true);
        }
        if !self.overwrite {
            return Err(Error::Exists {
                path: output.to_path_buf(),
            });
        }
        Ok(false)
    }
}

/// `restore` with `-` as the input (one image from stdin) or as the output (to stdout, in `--format`):
/// one image, and nothing but the image on stdout.
fn restore_stream(
    args: &RestoreArgs,
    bundle: crate::Bundle,
    options: &RestoreOptions,
    inputs: &[PathBuf],
    mask: Option<&crate::Mask>,
    noise: &[f32],
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
    let (pipeline, tiling) = args.engine.open(bundle, options)?;
    let mut report = BatchReport {
        done: 0,
        skipped: 0,
        failed: vec![],
        interrupted: None,
    };
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
        let control = Control {
            cancel: Some(crate::interrupt::install()),
            progress: None,
        };
        let done = pipeline.restore_picture(&picture, mask, noise, &tiling, args.finish(), &control)?;
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

/// "error: INPUT: why", naming the input once even where the error names a path itself.
fn error_line(input: &Path, e: &Error) -> String {
    let msg = e.to_string();
    let path = crate::names::escaped(input);
    if msg.starts_with(&path) {
        format!("error: {msg}")
    } else {
        format!("error: {path}: {msg}")
    }
}

/// Print a command's text (exit 0) or its error (exit 2).
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
        Command::Serve(args) => match serve(&args) {
            Ok(()) => EXIT_OK,
            Err(e) => {
                eprintln!("error: {e}");
                EXIT_USAGE
            }
        },
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
