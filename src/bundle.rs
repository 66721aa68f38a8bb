//! A model bundle: bundle.yaml plus five ONNX graphs (and an optional fp16 backbone), parsed into typed
//! structs and validated once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::error::{Error, Result};
pub use crate::graph_kind::GraphKind;
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

    /// The padding mode's name in bundle.yaml.
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

/// One axis of a declared ONNX shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A dynamic axis with a symbolic name; axes that share a name must have the same size.
    Named(String),
    /// A dynamic axis without a name.
    Any,
}

impl Dim {
    /// The fixed size, if any.
    pub fn fixed(&self) -> Option<i64> {
        match self {
            Dim::Fixed(v) => Some(*v),
            _ => None,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(v) => write!(f, "{v}"),
            Dim::Named(n) => f.write_str(n),
            Dim::Any => f.write_str("?"),
        }
    }
}

/// One input or output of an ONNX graph as the file declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct IoSignature {
    /// The input or output name.
    pub name: String,
    /// ONNX element type (1 = float32, 7 = int64).
    pub elem_type: i32,
    /// The declared shape, axis by axis.
    pub dims: Vec<Dim>,
}

/// An ONNX graph held in memory with its declared signature.
#[derive(Debug, Clone)]
pub struct GraphData {
    /// Which graph.
    pub kind: GraphKind,
    /// Where the bytes came from (a path, or the name of the built-in model's file).
    pub origin: PathBuf,
    /// The ONNX bytes.
    pub bytes: Arc<[u8]>,
    /// Declared inputs.
    pub inputs: Vec<IoSignature>,
    /// Declared outputs.
    pub outputs: Vec<IoSignature>,
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

/// A loaded, validated bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The folder (or a descriptive name for the built-in model).
    pub origin: PathBuf,
    /// bundle.yaml, validated.
    pub spec: BundleSpec,
    /// The schedule, recomputed from the spec and checked against its coefficients.
    pub schedule: Schedule,
    /// Indexed by `GraphKind as usize`.
    graphs: Vec<GraphData>,
    /// The optional float16 backbone (kind `Backbone`).
    backbone_fp16: Option<GraphData>,
}

const ONNX_FLOAT: i32 = 1;
const ONNX_INT64: i32 = 7;

impl Bundle {
    /// Read `dir/bundle.yaml` and its graphs, and validate them against each other.
    pub fn load(dir: impl AsRef<Path>) -> Result<Bundle> {
        let dir = dir.as_ref();
        let yaml_path = dir.join("bundle.yaml");
        if !dir.is_dir() {
            return Err(Error::bundle(dir, "not a model bundle folder"));
        }
        let text = std::fs::read_to_string(&yaml_path).map_err(|e| Error::io(&yaml_path, e))?;
        Self::from_parts(dir, &text, |file| {
            let path = dir.join(file);
            std::fs::read(&path)
                .map(|b| (path.clone(), b))
                .map_err(|e| Error::io(&path, e))
        })
    }

    /// Build a bundle from its YAML text and a function that returns each graph file's bytes.
    pub fn from_parts(
        origin: impl Into<PathBuf>,
        yaml: &str,
        mut read: impl FnMut(&str) -> Result<(PathBuf, Vec<u8>)>,
    ) -> Result<Bundle> {
        let origin = origin.into();
        let yaml_path = origin.join("bundle.yaml");
        let spec: BundleSpec = serde_yaml::from_str(yaml).map_err(|e| Error::bundle(&yaml_path, e.to_string()))?;
        let schedule = validate_spec(&spec).map_err(|msg| Error::bundle(&yaml_path, msg))?;
        let mut load_file = |kind: GraphKind, gs: &GraphSpec| -> Result<GraphData> {
            let (path, bytes) = read(&gs.file)?;
            let (inputs, outputs) = onnx_signature(&bytes)
                .map_err(|msg| Error::bundle(&path, format!("not a readable ONNX model: {msg}")))?;
            let graph = GraphData {
                kind,
                origin: path,
                bytes: bytes.into(),
                inputs,
                outputs,
            };
            check_graph(&spec, &graph).map_err(|msg| Error::bundle(&graph.origin, msg))?;
            Ok(graph)
        };
        let graphs = GraphKind::ALL
            .into_iter()
            .map(|kind| load_file(kind, spec.graphs.get(kind)))
            .collect::<Result<Vec<_>>>()?;
        let backbone_fp16 = spec
            .graphs
            .backbone_fp16
            .as_ref()
            .map(|gs| load_file(GraphKind::Backbone, gs))
            .transpose()?;
        Ok(Bundle {
            origin,
            spec,
            schedule,
            graphs,
            backbone_fp16,
        })
    }

    /// The same bundle with one graph replaced by an equivalent one (same inputs and outputs), such as a
    /// provider-specific rewrite.
    pub fn with_graph_bytes(&self, kind: GraphKind, bytes: Vec<u8>) -> Bundle {
        let mut b = self.clone();
        b.graphs[kind as usize].bytes = bytes.into();
        b
    }

    /// One graph's bytes and signature.
    pub fn graph(&self, kind: GraphKind) -> &GraphData {
        &self.graphs[kind as usize]
    }

    /// The precisions this bundle's backbone can run in (fp16 where it carries `backbone_fp16`).
    pub fn precisions(&self) -> Vec<Precision> {
        let mut out = vec![Precision::Fp32];
        if self.backbone_fp16.is_some() {
            out.push(Precision::Fp16);
        }
        out
    }

    /// The same bundle with its backbone in `precision`: for fp16 the `backbone_fp16` graph takes the
    /// backbone's place. An error names the bundle when it carries no such graph.
    pub fn with_precision(&self, precision: Precision) -> Result<Bundle> {
        match precision {
            Precision::Fp32 => Ok(self.clone()),
            Precision::Fp16 => {
                let fp16 = self.backbone_fp16.clone().ok_or_else(|| {
                    Error::bundle(
                        self.origin.join("bundle.yaml"),
                        "this bundle has no fp16 backbone (graphs.backbone_fp16); export it with \
                         `python -m diffir_export export --fp16`, or use --precision fp32",
                    )
                })?;
                let mut b = self.clone();
                b.graphs[GraphKind::Backbone as usize] = fp16;
                b.backbone_fp16 = None;
                Ok(b)
            }
        }
    }

    /// The task.
    pub fn task(&self) -> Task {
        self.spec.task
    }

    /// The upscaling factor.
    pub fn scale(&self) -> usize {
        self.spec.scale as usize
    }

    /// Width of the prior (IPR).
    pub fn ipr_dim(&self) -> usize {
        self.spec.ipr_dim
    }

    /// A multi-line human description (what `diffir info` prints).
    pub fn describe(&self) -> String {
        let s = &self.spec;
        let m = &s.model;
        let mut out = format!(
            "name:           {}\norigin:         {}\ntask:           {}\nscale:          {}\n",
            s.name,
            self.origin.display(),
            s.task,
            s.scale
        );
        out += &format!(
            "input:          {} channels, padded to a multiple of {} ({})\n",
            s.input_channels,
            s.size_multiple,
            match s.padding {
                Padding::Reflect => "reflect",
                Padding::Symmetric => "symmetric",
            }
        );
        out += &format!("prior (IPR):    {} values, CPEN halo {} px\n", s.ipr_dim, s.cpen_halo);
        out += &format!(
            "network:        dim {}, blocks {:?}, refinement {}, heads {:?}, ffn x{}, {} LayerNorm\n",
            m.dim, m.num_blocks, m.num_refinement_blocks, m.heads, m.ffn_expansion_factor, m.layernorm_type
        );
        out += &format!(
            "schedule:       {} steps, betas = linspace(sqrt({}), sqrt({}))^2\n",
            s.schedule.timesteps, s.schedule.linear_start, s.schedule.linear_end
        );
        let fmt_coef = |v: &[f64]| v.iter().map(|c| format!("{c:.6}")).collect::<Vec<_>>().join(", ");
        out += &format!("  coef1:        [{}]\n", fmt_coef(&self.schedule.coef1));
        out += &format!("  coef2:        [{}]\n", fmt_coef(&self.schedule.coef2));
        for g in self.graphs.iter().chain(&self.backbone_fp16) {
            let sig = |v: &[IoSignature]| {
                v.iter()
                    .map(|io| {
                        let dims: Vec<String> = io.dims.iter().map(|d| d.to_string()).collect();
                        format!("{}[{}]", io.name, dims.join("x"))
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let name = if self.backbone_fp16.as_ref().is_some_and(|f| std::ptr::eq(f, g)) {
                "backbone (fp16)".to_string()
            } else {
                g.kind.name().to_string()
            };
            out += &format!(
                "graph {:9} {} ({:.1} MB): {} -> {}\n",
                format!("{name}:"),
                g.origin.file_name().map_or("".into(), |f| f.to_string_lossy()),
                g.bytes.len() as f64 / 1e6,
                sig(&g.inputs),
                sig(&g.outputs)
            );
        }
        let p = &s.provenance;
        out += &format!(
            "provenance:     {} ({}), sha256 {}\n                exported by {}, torch {}, opset {}\n",
            p.checkpoint,
            p.checkpoint_layout,
            if p.checkpoint_sha256.is_empty() {
                "-"
            } else {
                &p.checkpoint_sha256
            },
            p.exporter,
            p.torch,
            p.opset
        );
        if !p.graph_rewrites.is_empty() {
            out += &format!("graph rewrites: {}\n", p.graph_rewrites.join(", "));
        }
        out
    }
}

/// Check the YAML against itself and the runtime's schedule; returns the runtime's schedule.
fn validate_spec(s: &BundleSpec) -> std::result::Result<Schedule, String> {
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

/// Inputs and outputs an ONNX file declares (initializers excluded).
fn onnx_signature(bytes: &[u8]) -> std::result::Result<(Vec<IoSignature>, Vec<IoSignature>), String> {
    use tract_onnx::pb::{tensor_shape_proto::dimension, type_proto};
    use tract_onnx::prelude::Framework;
    let proto = tract_onnx::onnx()
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| e.to_string())?;
    let graph = proto.graph.ok_or("the file has no graph")?;
    let initializers: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let sig = |v: &tract_onnx::pb::ValueInfoProto| {
        let (elem_type, dims) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => (
                t.elem_type,
                t.shape
                    .as_ref()
                    .map(|s| {
                        s.dim
                            .iter()
                            .map(|d| match &d.value {
                                Some(dimension::Value::DimValue(v)) => Dim::Fixed(*v),
                                Some(dimension::Value::DimParam(n)) if !n.is_empty() => Dim::Named(n.clone()),
                                _ => Dim::Any,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            _ => (0, vec![]),
        };
        IoSignature {
            name: v.name.clone(),
            elem_type,
            dims,
        }
    };
    let inputs = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(i.name.as_str()))
        .map(sig)
        .collect();
    let outputs = graph.output.iter().map(sig).collect();
    Ok((inputs, outputs))
}

/// The graph's declared inputs/outputs must be the ones bundle.yaml names, with the right types and the
/// channel counts the bundle implies.
fn check_graph(spec: &BundleSpec, g: &GraphData) -> std::result::Result<(), String> {
    let declared = spec.graphs.get(g.kind);
    let names = |v: &[IoSignature]| v.iter().map(|io| io.name.clone()).collect::<Vec<_>>();
    if names(&g.inputs) != declared.inputs || names(&g.outputs) != declared.outputs {
        return Err(format!(
            "graph '{}' has inputs {:?} and outputs {:?}, but bundle.yaml declares {:?} -> {:?}",
            g.kind.name(),
            names(&g.inputs),
            names(&g.outputs),
            declared.inputs,
            declared.outputs
        ));
    }
    let d = spec.ipr_dim as i64;
    let c = spec.input_channels as i64;
    // (name, element type, rank, channel axis 1 size) for every input and output.
    let want: &[(&str, i32, usize, i64)] = match g.kind {
        GraphKind::Cpen => &[("image", ONNX_FLOAT, 4, c), ("condition", ONNX_FLOAT, 2, d)],
        GraphKind::Denoiser => &[
            ("x", ONNX_FLOAT, 2, d),
            ("t", ONNX_INT64, 1, -1),
            ("condition", ONNX_FLOAT, 2, d),
            ("x0", ONNX_FLOAT, 2, d),
        ],
        GraphKind::Backbone => &[
            ("image", ONNX_FLOAT, 4, c),
            ("ipr", ONNX_FLOAT, 2, d),
            ("output", ONNX_FLOAT, 4, 3),
        ],
        GraphKind::CpenFeatures => &[("image", ONNX_FLOAT, 4, c), ("features", ONNX_FLOAT, 4, d)],
        GraphKind::CpenHead => &[("pooled", ONNX_FLOAT, 2, d), ("condition", ONNX_FLOAT, 2, d)],
    };
    for io in g.inputs.iter().chain(&g.outputs) {
        let Some(&(_, ty, rank, ch)) = want.iter().find(|w| w.0 == io.name) else {
            continue;
        };
        if io.elem_type != ty {
            return Err(format!(
                "graph '{}' {} has element type {} (expected {})",
                g.kind.name(),
                io.name,
                io.elem_type,
                if ty == ONNX_FLOAT { "float32" } else { "int64" }
            ));
        }
        if !io.dims.is_empty() && io.dims.len() != rank {
            return Err(format!(
                "graph '{}' {} has rank {} (expected {rank})",
                g.kind.name(),
                io.name,
                io.dims.len()
            ));
        }
        if ch >= 0 {
            if let Some(Dim::Fixed(actual)) = io.dims.get(1) {
                if *actual != ch {
                    return Err(format!(
                        "graph '{}' {} has {actual} channels but bundle.yaml implies {ch}",
                        g.kind.name(),
                        io.name
                    ));
                }
            }
        }
    }
    if g.kind == GraphKind::Backbone {
        check_backbone_output(spec.scale as i64, g)?;
    }
    Ok(())
}

/// The backbone's declared output height and width must be `scale` times its input's. A dimension name
/// shared with the input axis says "the same size", which is false unless the scale is 1; memory planners
/// that trust declared shapes (fixed-shape GPU sessions, WebGPU) then plan the wrong buffer.
fn check_backbone_output(scale: i64, g: &GraphData) -> std::result::Result<(), String> {
    let (Some(image), Some(output)) = (
        g.inputs.iter().find(|io| io.name == "image"),
        g.outputs.iter().find(|io| io.name == "output"),
    ) else {
        return Ok(());
    };
    for (axis, what) in [(2, "height"), (3, "width")] {
        let (Some(i), Some(o)) = (image.dims.get(axis), output.dims.get(axis)) else {
            continue;
        };
        let contradiction = match (i, o) {
            (Dim::Named(a), Dim::Named(b)) => a == b && scale != 1,
            (Dim::Fixed(a), Dim::Fixed(b)) => *b != a * scale,
            (Dim::Named(_), Dim::Fixed(_)) => true,
            _ => false,
        };
        if contradiction {
            return Err(format!(
                "graph 'backbone' declares its output {what} as '{o}' for an input {what} of '{i}', but the \
                 output is {scale}x the input; re-export the bundle, or fix the declaration with \
                 `python -m diffir_export upgrade BUNDLE`"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_rule() {
        assert!(Task::Inpaint.check_mask(true).is_ok());
        assert!(Task::Inpaint.check_mask(false).unwrap_err().contains("--mask"));
        assert!(Task::Sr.check_mask(false).is_ok());
        assert!(Task::Deblur.check_mask(true).unwrap_err().contains("takes none"));
    }

    #[test]
    fn unshuffle_factors_follow_the_spec() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/bundles/sr_x2/bundle.yaml"
        ))
        .unwrap();
        let mut spec: BundleSpec = serde_yaml::from_str(&text).unwrap();
        let mut factors = vec![];
        for (task, scale) in [
            (Task::Sr, 4),
            (Task::Sr, 2),
            (Task::Sr, 1),
            (Task::Deblur, 1),
            (Task::Inpaint, 1),
        ] {
            spec.task = task;
            spec.scale = scale;
            factors.push((spec.g_unshuffle(), spec.cpen_unshuffle()));
        }
        assert_eq!(factors, [(1, 1), (2, 2), (4, 4), (1, 4), (1, 4)]);
    }
}
