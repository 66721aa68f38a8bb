//! The arguments `restore`, `bench`, `info` and `serve` share: the model, the backend and its plan, and
//! what a restore writes.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::backend::BackendKind;
use crate::bundle::{Bundle, Precision};
use crate::error::{Error, Result};
use crate::image_io;
use crate::options::RestoreOptions;
use crate::pipeline::{Finish, Pipeline};
use crate::plan::Words;
use crate::plan::{DeviceList, TileRequest};

/// The model of `restore`, `bench` and `info`.
#[derive(Debug, Args)]
pub struct ModelArg {
    /// Model: a bundle folder, or the name of one in the models folder ($DIFFIR_MODELS_DIR, default
    /// ~/.local/share/diffir/models; `diffir models` lists them). Default: the built-in x4 model.
    #[arg(short = 'n', long)]
    pub model: Option<PathBuf>,
}

impl ModelArg {
    pub(super) fn bundle(&self) -> Result<Bundle> {
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
    #[arg(long, value_parser = crate::memory::parse_bytes)]
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
    #[arg(long, default_value_t = crate::tiling::DEFAULT_TILE_OVERLAP)]
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

pub(super) fn parse_outscale(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if Finish::valid_outscale(v) => Ok(v),
        _ => Err(format!("'{s}' is not a scale in (0, 16]")),
    }
}

fn parse_key_value(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => Ok((k.trim().into(), v.trim().into())),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

pub(super) fn parse_seconds(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number of seconds")),
    }
}

impl clap::builder::ValueParserFactory for TileRequest {
    type Parser = fn(&str) -> std::result::Result<TileRequest, String>;
    fn value_parser() -> Self::Parser {
        |s| s.parse()
    }
}

impl EngineArgs {
    pub(super) fn kind(&self) -> Result<BackendKind> {
        let default = if self.triton_url.is_some() { "triton" } else { "auto" };
        let kind: BackendKind = self
            .backend
            .as_deref()
            .unwrap_or(default)
            .parse()
            .map_err(Error::Usage)?;
        if self.triton_url.is_some() && kind != BackendKind::Triton {
            return Err(Error::Usage(format!(
                "--triton-url is for --backend triton, not --backend {kind}"
            )));
        }
        Ok(kind)
    }

    /// The Triton options of --backend triton.
    fn triton_options(&self) -> Result<crate::triton::TritonOptions> {
        let Some(url) = &self.triton_url else {
            return Err(Error::Usage(
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

    /// Start the backend for `bundle`, say which (with its plan) on stderr, and return the pipeline.
    pub fn start(&self, bundle: Bundle) -> Result<Pipeline> {
        self.open(bundle, &self.options()?)
    }

    /// `start` with options the caller completed (noise, limits).
    pub fn open(&self, bundle: Bundle, options: &RestoreOptions) -> Result<Pipeline> {
        if self.no_cache {
            crate::backend::optimised_cache::disable_disk_cache();
        }
        let pipeline = Pipeline::open(bundle, options)?;
        if self.verbose {
            eprintln!("{}", pipeline.backend().line(Words::Flags));
        } else if !self.quiet {
            eprintln!("{}", pipeline.backend().summary(Words::Flags));
        }
        Ok(pipeline)
    }
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
    /// Output format for folder runs (png, jpg, webp, tif, bmp, npy); default: each input's own format. y4m:
    /// the input (`-` or a file) is a YUV4MPEG2 stream restored frame by frame into one (`-o -` or a file).
    #[arg(short = 'f', long, value_parser = clap::builder::PossibleValuesParser::new(image_io::OutputFormat::all_extensions().chain(["y4m"])))]
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

impl RestoreArgs {
    /// What happens to each result before it is written (--outscale, --tta).
    pub(super) fn finish(&self) -> Finish {
        Finish {
            outscale: self.outscale,
            tta: self.tta,
        }
    }

    /// Whether to skip an output that exists (--skip-existing); an error if it exists without --overwrite.
    pub(super) fn skip(&self, output: &Path) -> Result<bool> {
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
