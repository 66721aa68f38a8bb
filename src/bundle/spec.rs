//! bundle.yaml as typed structs (serde, unknown fields refused) and its validation against itself and the
//! runtime's schedule.

use std::fmt;

use serde::Deserialize;

use crate::graph_kind::GraphKind;
use crate::schedule::Schedule;

/// Bundle format this runtime reads.
pub const FORMAT: u32 = 1;
/// Largest |difference| allowed between the bundle's schedule numbers and the runtime's.
pub const SCHEDULE_TOLERANCE: f64 = 1e-6;

/// What the model restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Super-resolution (x4, x2, or x1 real-world restoration).
    Sr,
    /// Motion deblurring.
    Deblur,
    /// Inpainting: a mask marks the holes.
    Inpaint,
}

impl Task {
    /// The task's name in bundle.yaml.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Sr => "sr",
            Task::Deblur => "deblur",
            Task::Inpaint => "inpaint",
        }
    }
}

impl Task {
    /// Inpainting needs a mask; every other task takes none.
    pub fn check_mask(self, given: bool) -> std::result::Result<(), String> {
        match (self, given) {
            (Task::Inpaint, false) => Err("this is an inpainting model: give a --mask".into()),
            (task, true) if task != Task::Inpaint => Err(format!("a mask was given but this {task} model takes none")),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the image is padded on the bottom and right to the size multiple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    /// PyTorch/NumPy 'reflect': the edge pixel is not repeated (SR, deblur).
    Reflect,
    /// NumPy 'symmetric': the edge pixel is repeated (inpainting).
    Symmetric,
}

/// The numeric precision the backbone runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Precision {
    /// float32 everywhere.
    #[default]
    Fp32,
    /// float16 backbone: the bundle's `backbone_fp16` graph (CUDA, onnxruntime CPU), or TensorRT's fp16 engines.
    /// Tiles whose output has NaN or Inf are redone in float32.
    Fp16,
}

impl Precision {
    /// The names `--precision` takes.
    pub const NAMES: [&'static str; 2] = ["fp32", "fp16"];

    /// The precision's name, as `--precision` and bundle.yaml write it.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "fp16" => Ok(Precision::Fp16),
            _ => Err(format!("unknown precision '{s}' (one of {})", Self::NAMES.join(", "))),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
/// The diffusion schedule of a bundle (bundle.yaml `schedule`).
pub struct ScheduleSpec {
    /// How the betas are spaced (`sqrt_linspace_squared`).
    pub kind: String,
    /// Reverse steps T.
    pub timesteps: usize,
    /// First beta.
    pub linear_start: f64,
    /// Last beta.
    pub linear_end: f64,
    /// Posterior-mean coefficient of x̂0, per step.
    pub coef1: Vec<f64>,
    /// Posterior-mean coefficient of x_t, per step.
    pub coef2: Vec<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
/// One graph of a bundle: its file and its input and output names.
pub struct GraphSpec {
    /// The ONNX file, relative to the bundle folder.
    pub file: String,
    /// Input names, in the graph contract's order.
    pub inputs: Vec<String>,
    /// Output names.
    pub outputs: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
/// The bundle's graphs (bundle.yaml `graphs`).
pub struct GraphsSpec {
    /// Image → condition, whole image.
    pub cpen: GraphSpec,
    /// One reverse step of the prior.
    pub denoiser: GraphSpec,
    /// Image + prior → restored image.
    pub backbone: GraphSpec,
    /// CPEN up to its global average pool.
    pub cpen_features: GraphSpec,
    /// CPEN's MLP on the pooled features.
    pub cpen_head: GraphSpec,
    /// Optional: the backbone in float16 (float32 inputs and output), for `--precision fp16`.
    #[serde(default)]
    pub backbone_fp16: Option<GraphSpec>,
}

impl GraphsSpec {
    /// The spec of one graph kind.
    pub fn get(&self, kind: GraphKind) -> &GraphSpec {
        match kind {
            GraphKind::Cpen => &self.cpen,
            GraphKind::Denoiser => &self.denoiser,
            GraphKind::Backbone => &self.backbone,
            GraphKind::CpenFeatures => &self.cpen_features,
            GraphKind::CpenHead => &self.cpen_head,
        }
    }
}

/// The network's hyper-parameters, as the exporter detected them (informational, cross-checked).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The task family.
    pub family: Task,
    /// Upscaling factor.
    pub scale: u32,
    /// Base channel width of DIRformer.
    pub dim: u32,
    /// Transformer blocks per level.
    pub num_blocks: [u32; 4],
    /// Refinement blocks at full resolution.
    pub num_refinement_blocks: u32,
    /// Attention heads per level.
    pub heads: [u32; 4],
    /// FFN hidden width over the channel width.
    pub ffn_expansion_factor: f64,
    /// Whether convolutions carry a bias.
    pub bias: bool,
    /// `BiasFree` or `WithBias`.
    pub layernorm_type: String,
    /// CPEN residual blocks.
    pub n_encoder_res: u32,
    /// Denoiser residual blocks.
    pub n_denoise_res: u32,
    /// Width of the prior (IPR).
    pub ipr_dim: usize,
    /// Reverse diffusion steps.
    pub timesteps: usize,
    /// First beta.
    pub linear_start: f64,
    /// Last beta.
    pub linear_end: f64,
    /// Model name.
    pub name: String,
}

/// Where the weights came from and what exported them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The checkpoint's file name.
    pub checkpoint: String,
    /// SHA-256 of the checkpoint.
    pub checkpoint_sha256: String,
    /// The checkpoint's key layout (basicsr params_ema, ...).
    pub checkpoint_layout: String,
    /// Exporter name and version.
    pub exporter: String,
    /// PyTorch version used for the export.
    pub torch: String,
    /// ONNX opset.
    pub opset: u32,
    /// The export-time rewrites applied to the backbone (e.g. channel_means_as_conv); empty for a plain
    /// export.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub graph_rewrites: Vec<String>,
}

/// bundle.yaml, field for field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleSpec {
    /// bundle.yaml format version.
    pub format: u32,
    /// Bundle name.
    pub name: String,
    /// The task.
    pub task: Task,
    /// Upscaling factor.
    pub scale: u32,
    /// Channels of the network input (4 for inpainting: RGB + mask).
    pub input_channels: usize,
    /// Width of the prior (IPR).
    pub ipr_dim: usize,
    /// Inputs are padded to a multiple of this.
    pub size_multiple: usize,
    /// How inputs are padded.
    pub padding: Padding,
    /// Halo (input pixels) around each CPEN window for exact tiling.
    pub cpen_halo: usize,
    /// The diffusion schedule.
    pub schedule: ScheduleSpec,
    /// The graphs.
    pub graphs: GraphsSpec,
    /// The architecture's hyper-parameters.
    pub model: ModelSpec,
    /// Where the weights came from.
    pub provenance: Provenance,
}

impl BundleSpec {
    /// Pixel-unshuffle factor before G (SR x2 and x1 only).
    pub fn g_unshuffle(&self) -> usize {
        match (self.task, self.scale) {
            (Task::Sr, 2) => 2,
            (Task::Sr, 1) => 4,
            _ => 1,
        }
    }

    /// Pixel-unshuffle factor before CPEN: CPEN's features are at 1/this of the input resolution.
    pub fn cpen_unshuffle(&self) -> usize {
        match self.task {
            Task::Sr => self.g_unshuffle(),
            _ => 4,
        }
    }
}

/// Check the YAML against itself and the runtime's schedule; returns the runtime's schedule.
pub(super) fn validate_spec(s: &BundleSpec) -> std::result::Result<Schedule, String> {
    if s.format != FORMAT {
        return Err(format!(
            "format {} is not supported (this runtime reads format {FORMAT})",
            s.format
        ));
    }
    let m = &s.model;
    let expect = |field: &str, ok: bool, detail: String| {
        if ok {
            Ok(())
        } else {
            Err(format!("field '{field}': {detail}"))
        }
    };
    expect(
        "task",
        s.task == m.family,
        format!("{} but model.family is {}", s.task, m.family),
    )?;
    let scale_ok = match s.task {
        Task::Sr => matches!(s.scale, 1 | 2 | 4),
        _ => s.scale == 1,
    };
    expect(
        "scale",
        scale_ok && s.scale == m.scale,
        format!("{} is not valid for {} (model.scale {})", s.scale, s.task, m.scale),
    )?;
    let channels = if s.task == Task::Inpaint { 4 } else { 3 };
    expect(
        "input_channels",
        s.input_channels == channels,
        format!("{} but a {} model takes {channels}", s.input_channels, s.task),
    )?;
    expect(
        "ipr_dim",
        s.ipr_dim > 0 && s.ipr_dim == m.ipr_dim,
        format!("{} but model.ipr_dim is {}", s.ipr_dim, m.ipr_dim),
    )?;
    // G's three 2x downsamplings after its unshuffle; CPEN's unshuffle (4) divides 8.
    let multiple = 8 * s.g_unshuffle();
    expect(
        "size_multiple",
        s.size_multiple == multiple,
        format!(
            "{} but a {} x{} model needs {multiple}",
            s.size_multiple, s.task, s.scale
        ),
    )?;
    let padding = if s.task == Task::Inpaint {
        Padding::Symmetric
    } else {
        Padding::Reflect
    };
    expect(
        "padding",
        s.padding == padding,
        format!("{:?} but {} models use {:?}", s.padding, s.task, padding),
    )?;
    let sc = &s.schedule;
    expect(
        "schedule.kind",
        sc.kind == "sqrt_linspace_squared",
        format!("'{}' is unknown (expected sqrt_linspace_squared)", sc.kind),
    )?;
    expect(
        "schedule.timesteps",
        sc.timesteps >= 1 && sc.timesteps == m.timesteps,
        format!("{} (model.timesteps {})", sc.timesteps, m.timesteps),
    )?;
    let endpoints_ok = |v: f64| v > 0.0 && v < 1.0;
    expect(
        "schedule.linear_start",
        endpoints_ok(sc.linear_start) && endpoints_ok(sc.linear_end),
        format!("endpoints {} and {} must lie in (0, 1)", sc.linear_start, sc.linear_end),
    )?;
    let schedule = Schedule::new(sc.timesteps, sc.linear_start, sc.linear_end);
    match schedule.max_coef_diff(&sc.coef1, &sc.coef2) {
        None => {
            return Err(format!(
                "field 'schedule.coef1/coef2': {} and {} values for {} steps",
                sc.coef1.len(),
                sc.coef2.len(),
                sc.timesteps
            ))
        }
        Some(d) if d.is_nan() || d > SCHEDULE_TOLERANCE => {
            return Err(format!(
                "field 'schedule.coef1/coef2': differ from the schedule computed for T={}, start={}, end={} by {d:.3e}",
                sc.timesteps, sc.linear_start, sc.linear_end
            ))
        }
        Some(_) => {}
    }
    let optional = s
        .graphs
        .backbone_fp16
        .as_ref()
        .map(|g| ("backbone_fp16", GraphKind::Backbone, g));
    let required = GraphKind::ALL.map(|kind| (kind.name(), kind, s.graphs.get(kind)));
    for (name, kind, g) in required.into_iter().chain(optional) {
        let (inputs, outputs) = kind.contract();
        expect(
            &format!("graphs.{name}"),
            g.inputs == inputs && g.outputs == outputs,
            format!(
                "declares inputs {:?} and outputs {:?}; the runtime needs {:?} -> {:?}",
                g.inputs, g.outputs, inputs, outputs
            ),
        )?;
        expect(
            &format!("graphs.{name}.file"),
            !g.file.is_empty() && !g.file.contains(['/', '\\']) && g.file != "..",
            format!("'{}' must be a file name inside the bundle folder", g.file),
        )?;
    }
    Ok(schedule)
}
