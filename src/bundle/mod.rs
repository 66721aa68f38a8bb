//! A model bundle: bundle.yaml plus five ONNX graphs (and an optional fp16 backbone), parsed into typed
//! structs and validated once.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
pub use crate::graph_kind::GraphKind;
use crate::onnx_proto::{FLOAT, INT64};
use crate::schedule::Schedule;
use crate::signature::onnx_signature;
pub use crate::signature::{Dim, GraphData, IoSignature};

mod spec;

use spec::validate_spec;
pub use spec::*;

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
        GraphKind::Cpen => &[("image", FLOAT, 4, c), ("condition", FLOAT, 2, d)],
        GraphKind::Denoiser => &[
            ("x", FLOAT, 2, d),
            ("t", INT64, 1, -1),
            ("condition", FLOAT, 2, d),
            ("x0", FLOAT, 2, d),
        ],
        GraphKind::Backbone => &[("image", FLOAT, 4, c), ("ipr", FLOAT, 2, d), ("output", FLOAT, 4, 3)],
        GraphKind::CpenFeatures => &[("image", FLOAT, 4, c), ("features", FLOAT, 4, d)],
        GraphKind::CpenHead => &[("pooled", FLOAT, 2, d), ("condition", FLOAT, 2, d)],
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
                if ty == FLOAT { "float32" } else { "int64" }
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
