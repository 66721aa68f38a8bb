//! `diffir triton-repo`: a Triton model repository made from a bundle, with two models.
//!
//! - `NAME_prior`: [`super::prior_graph`] (CPEN + the unrolled reverse diffusion), one image per request.
//! - `NAME_backbone`: the bundle's backbone with `max_batch_size` and dynamic batching; a batch of tiles,
//!   each with its own image's prior. Tiles of one shape batch together on the server.
//!
//! Both run on Triton's onnxruntime backend (`platform: "onnxruntime_onnx"`). The backbone's config also
//! carries the tile size clients should use and the SHA-256 of its graph, so a client can check that the
//! server runs the bundle it holds.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::digest::sha256_hex;

use crate::bundle::{Bundle, GraphKind};
use crate::error::{Error, Result};

/// Config parameter naming the backbone tile (input pixels) clients should send.
pub const PARAM_TILE: &str = "diffir_tile";
/// Config parameter holding the SHA-256 (hex) of the backbone graph served.
pub const PARAM_SHA256: &str = "diffir_backbone_sha256";
/// Config parameter naming the bundle the repository was made from.
pub const PARAM_BUNDLE: &str = "diffir_bundle";

/// Where the models run: Triton's `instance_group` kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceKind {
    /// Instances on every visible GPU (`KIND_GPU`).
    Gpu,
    /// Instances on the CPU (`KIND_CPU`).
    Cpu,
}

/// What `diffir triton-repo` writes.
#[derive(Debug, Clone)]
pub struct RepoOptions {
    /// Model name prefix; the models are `NAME_prior` and `NAME_backbone`. Default: the bundle's name.
    pub name: Option<String>,
    /// The backbone tile clients send, in input pixels (rounded up to the model's size multiple).
    /// Default: 128.
    pub tile: usize,
    /// The backbone's `max_batch_size` (tiles per server-side batch). Default: 8.
    pub max_batch: usize,
    /// Model instances per device (or on the CPU). Default: 1.
    pub instances: usize,
    /// Default: GPU.
    pub kind: InstanceKind,
    /// Add the TensorRT execution accelerator to both models (not run here). Default: false.
    pub tensorrt: bool,
    /// Replace models of the same names already in the repository. Default: false.
    pub overwrite: bool,
}

impl Default for RepoOptions {
    fn default() -> Self {
        RepoOptions {
            name: None,
            tile: 128,
            max_batch: 8,
            instances: 1,
            kind: InstanceKind::Gpu,
            tensorrt: false,
            overwrite: false,
        }
    }
}

/// The two model names for a prefix.
pub fn model_names(prefix: &str) -> (String, String) {
    (format!("{prefix}_prior"), format!("{prefix}_backbone"))
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        return Err(Error::Usage(format!(
            "model name '{name}': use letters, digits, '_', '-' and '.' only"
        )));
    }
    Ok(())
}

fn tensor(out: &mut String, name: &str, dims: &[i64]) {
    let dims: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    let _ = writeln!(
        out,
        "  {{\n    name: \"{name}\"\n    data_type: TYPE_FP32\n    dims: [ {} ]\n  }}",
        dims.join(", ")
    );
}

fn io_block(out: &mut String, key: &str, tensors: &[(&str, Vec<i64>)]) {
    let _ = writeln!(out, "{key} [");
    for (i, (name, dims)) in tensors.iter().enumerate() {
        tensor(out, name, dims);
        if i + 1 < tensors.len() {
            out.pop();
            out.push_str(",\n");
        }
    }
    out.push_str("]\n");
}

fn common_tail(out: &mut String, opts: &RepoOptions) {
    let kind = match opts.kind {
        InstanceKind::Gpu => "KIND_GPU",
        InstanceKind::Cpu => "KIND_CPU",
    };
    let _ = writeln!(
        out,
        "instance_group [\n  {{\n    count: {}\n    kind: {kind}\n  }}\n]",
        opts.instances
    );
    if opts.tensorrt {
        out.push_str(
            "optimization {\n  execution_accelerators {\n    gpu_execution_accelerator: [\n      {\n        \
             name: \"tensorrt\"\n        parameters { key: \"precision_mode\" value: \"FP32\" }\n        \
             parameters { key: \"max_workspace_size_bytes\" value: \"4294967296\" }\n        \
             parameters { key: \"trt_engine_cache_enable\" value: \"1\" }\n      }\n    ]\n  }\n}\n",
        );
    }
}

fn parameter(out: &mut String, key: &str, value: &str) {
    let _ = writeln!(
        out,
        "parameters {{\n  key: \"{key}\"\n  value: {{ string_value: \"{value}\" }}\n}}"
    );
}

/// The prior model's config.pbtxt.
pub fn prior_config(bundle: &Bundle, name: &str, opts: &RepoOptions) -> String {
    let (c, d) = (bundle.spec.input_channels as i64, bundle.ipr_dim() as i64);
    let mut out = format!(
        "# The DiffIR prior of '{}' (CPEN + the unrolled reverse diffusion), written by diffir triton-repo.\n\
         name: \"{name}\"\nplatform: \"onnxruntime_onnx\"\nmax_batch_size: 0\n",
        bundle.spec.name
    );
    io_block(
        &mut out,
        "input",
        &[
            (super::prior_graph::IMAGE, vec![1, c, -1, -1]),
            (super::prior_graph::NOISE, vec![1, d]),
        ],
    );
    io_block(&mut out, "output", &[(super::prior_graph::IPR, vec![1, d])]);
    common_tail(&mut out, opts);
    parameter(&mut out, PARAM_BUNDLE, &bundle.spec.name);
    out
}

/// The backbone model's config.pbtxt.
pub fn backbone_config(bundle: &Bundle, name: &str, opts: &RepoOptions) -> String {
    let spec = &bundle.spec;
    let (c, d) = (spec.input_channels as i64, bundle.ipr_dim() as i64);
    let tile = crate::tiling::round_up(opts.tile, spec.size_multiple);
    let g = &spec.graphs.backbone;
    let mut out = format!(
        "# The DiffIR backbone of '{}' over batches of tiles, written by diffir triton-repo.\n\
         name: \"{name}\"\nplatform: \"onnxruntime_onnx\"\nmax_batch_size: {}\n",
        spec.name, opts.max_batch
    );
    io_block(
        &mut out,
        "input",
        &[(g.inputs[0].as_str(), vec![c, -1, -1]), (g.inputs[1].as_str(), vec![d])],
    );
    io_block(&mut out, "output", &[(g.outputs[0].as_str(), vec![3, -1, -1])]);
    let preferred: Vec<String> = [2usize, 4, 8, 16, 32]
        .iter()
        .filter(|&&b| b <= opts.max_batch)
        .map(|b| b.to_string())
        .collect();
    out.push_str("dynamic_batching {\n");
    if !preferred.is_empty() {
        let _ = writeln!(out, "  preferred_batch_size: [ {} ]", preferred.join(", "));
    }
    out.push_str("  max_queue_delay_microseconds: 2000\n}\n");
    common_tail(&mut out, opts);
    parameter(&mut out, PARAM_TILE, &tile.to_string());
    parameter(&mut out, PARAM_BUNDLE, &spec.name);
    parameter(
        &mut out,
        PARAM_SHA256,
        &sha256_hex(&bundle.graph(GraphKind::Backbone).bytes),
    );
    out
}

/// Write the repository into `out` (created if needed); returns the model folders written.
pub fn write(bundle: &Bundle, out: &Path, opts: &RepoOptions) -> Result<Vec<PathBuf>> {
    if opts.max_batch == 0 || opts.instances == 0 || opts.tile == 0 {
        return Err(Error::Usage(
            "--max-batch, --instances and --tile must be at least 1".into(),
        ));
    }
    let prefix = opts.name.clone().unwrap_or_else(|| bundle.spec.name.clone());
    check_name(&prefix)?;
    let (prior_name, backbone_name) = model_names(&prefix);
    let prior = super::prior_graph::build(bundle)?;
    let models = [
        (prior_name.clone(), prior, prior_config(bundle, &prior_name, opts)),
        (
            backbone_name.clone(),
            bundle.graph(GraphKind::Backbone).bytes.to_vec(),
            backbone_config(bundle, &backbone_name, opts),
        ),
    ];
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let mut written = vec![];
    for (name, onnx, config) in models {
        let dir = out.join(&name);
        if dir.exists() {
            if !opts.overwrite {
                return Err(Error::Exists { path: dir });
            }
            // Only what this writes is replaced, each file atomically: the model's other versions and
            // files kept in its folder stay.
            for (path, bytes) in [
                (dir.join("1").join("model.onnx"), onnx.as_slice()),
                (dir.join("config.pbtxt"), config.as_bytes()),
            ] {
                crate::image_io::write_atomically(&path, true, |w| {
                    std::io::Write::write_all(w, bytes).map_err(|e| Error::io(&path, e))
                })?;
            }
            written.push(dir);
            continue;
        }
        // Written in a folder of a new, unique name and renamed, so a failure leaves no half-written model
        // (the folder is removed when dropped unrenamed; nothing of the user's is ever removed).
        let tmp = crate::image_io::temp_dir_in(out, &format!(".{name}."), ".partial")?;
        let version = tmp.path().join("1");
        std::fs::create_dir_all(&version).map_err(|e| Error::io(&version, e))?;
        let model = version.join("model.onnx");
        std::fs::write(&model, onnx).map_err(|e| Error::io(&model, e))?;
        let cfg = tmp.path().join("config.pbtxt");
        std::fs::write(&cfg, config).map_err(|e| Error::io(&cfg, e))?;
        std::fs::rename(tmp.path(), &dir).map_err(|e| Error::io(&dir, e))?;
        let _ = tmp.keep();
        written.push(dir);
    }
    Ok(written)
}
