//! The prior as one ONNX graph, for serving: CPEN and the T reverse diffusion steps unrolled, built by graph
//! surgery on the bundle's own cpen.onnx and denoiser.onnx (so it works for every bundle, the built-in
//! model included, without its checkpoint).
//!
//! Inputs `image` (1 × C × H × W, the padded network input) and `noise` (1 × D, x_T); output `ipr` (1 × D).
//! Each step computes x ← coef1\[t\]·x̂0 + coef2\[t\]·x in float64 and rounds to float32, exactly as
//! [`crate::sampler::reverse_chain`] does, so the graph reproduces the runtime's own prior.

use prost::Message;
use std::collections::HashMap;
use tract_onnx::pb::{self, tensor_shape_proto, type_proto, NodeProto, TensorProto, ValueInfoProto};

use crate::bundle::{Bundle, GraphKind};
use crate::error::{Error, Result};
use crate::onnx_proto::{int_attr, node, DOUBLE, FLOAT, INT64};

/// The prior graph's input and output names.
pub const IMAGE: &str = "image";
/// The prior graph's noise input name.
pub const NOISE: &str = "noise";
/// The prior graph's output name.
pub const IPR: &str = "ipr";

fn decode(bundle: &Bundle, kind: GraphKind) -> Result<pb::ModelProto> {
    let g = bundle.graph(kind);
    pb::ModelProto::decode(&g.bytes[..])
        .map_err(|e| Error::graph(kind, format!("{}: not a readable ONNX model: {e}", g.origin.display())))
}

fn value_info(name: &str, elem: i32, dims: &[Result<i64, &str>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| tensor_shape_proto::Dimension {
            value: Some(match d {
                Ok(v) => tensor_shape_proto::dimension::Value::DimValue(*v),
                Err(p) => tensor_shape_proto::dimension::Value::DimParam((*p).into()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
fn cast(name: String, input: String, to: i32) -> NodeProto {
    node("Cast", name.clone(), vec![input], name, vec![int_attr("to", to as i64)])
}

fn scalar_f64(name: String, v: f64) -> TensorProto {
    TensorProto {
        data_type: DOUBLE,
        double_data: vec![v],
        name,
        ..Default::default()
    }
}

/// Copy `graph`'s nodes with every value renamed through `rename` (graph inputs, outputs and initializers
/// by the caller's map, everything else under `prefix`).
fn copy_nodes(graph: &pb::GraphProto, prefix: &str, fixed: &HashMap<String, String>, out: &mut Vec<NodeProto>) {
    let rename = |v: &String| -> String {
        if v.is_empty() {
            return String::new();
        }
        fixed.get(v).cloned().unwrap_or_else(|| format!("{prefix}{v}"))
    };
    for n in &graph.node {
        let mut n = n.clone();
        n.name = format!("{prefix}{}", n.name);
        n.input = n.input.iter().map(rename).collect();
        n.output = n.output.iter().map(rename).collect();
        out.push(n);
    }
}

/// Build the unrolled prior graph of `bundle` (ONNX bytes).
pub fn build(bundle: &Bundle) -> Result<Vec<u8>> {
    let cpen = decode(bundle, GraphKind::Cpen)?;
    let den = decode(bundle, GraphKind::Denoiser)?;
    let (Some(cg), Some(dg)) = (cpen.graph.as_ref(), den.graph.as_ref()) else {
        return Err(Error::graph(GraphKind::Cpen, "the cpen or denoiser model has no graph"));
    };
    for (m, g, kind) in [(&cpen, cg, GraphKind::Cpen), (&den, dg, GraphKind::Denoiser)] {
        if !m.functions.is_empty() || !g.sparse_initializer.is_empty() {
            return Err(Error::graph(
                kind,
                "local functions or sparse initializers are not supported by the prior graph builder",
            ));
        }
    }
    let spec = &bundle.spec;
    let (c, d) = (spec.input_channels as i64, spec.ipr_dim as i64);
    let (cpen_in, cpen_out) = (&spec.graphs.cpen.inputs, &spec.graphs.cpen.outputs);
    let (den_in, den_out) = (&spec.graphs.denoiser.inputs, &spec.graphs.denoiser.outputs);
    let mut nodes = vec![];
    let mut initializers = vec![];

    // CPEN: its input is the prior's image; its initializers keep their bytes under a prefix.
    let mut fixed: HashMap<String, String> = HashMap::new();
    fixed.insert(cpen_in[0].clone(), IMAGE.into());
    for t in &cg.initializer {
        let mut t = t.clone();
        fixed.insert(t.name.clone(), format!("cpen/{}", t.name));
        t.name = format!("cpen/{}", t.name);
        initializers.push(t);
    }
    copy_nodes(cg, "cpen/", &fixed, &mut nodes);
    let condition = format!("cpen/{}", cpen_out[0]);

    // The denoiser's weights once, shared by every step.
    let mut den_fixed: HashMap<String, String> = HashMap::new();
    for t in &dg.initializer {
        let mut t = t.clone();
        den_fixed.insert(t.name.clone(), format!("denoiser/{}", t.name));
        t.name = format!("denoiser/{}", t.name);
        initializers.push(t);
    }
    let mut x = NOISE.to_string();
    let schedule = &bundle.schedule;
    for t in (0..schedule.timesteps()).rev() {
        let p = format!("step{t}/");
        let t_name = format!("{p}t");
        initializers.push(TensorProto {
            dims: vec![1],
            data_type: INT64,
            int64_data: vec![t as i64],
            name: t_name.clone(),
            ..Default::default()
        });
        let mut fixed = den_fixed.clone();
        fixed.insert(den_in[0].clone(), x.clone());
        fixed.insert(den_in[1].clone(), t_name);
        fixed.insert(den_in[2].clone(), condition.clone());
        copy_nodes(dg, &p, &fixed, &mut nodes);
        let x0 = format!("{p}{}", den_out[0]);
        // x ← coef1·x̂0 + coef2·x in float64, rounded to float32 (as the runtime's sampler does).
        let (c1, c2) = (format!("{p}coef1"), format!("{p}coef2"));
        initializers.push(scalar_f64(c1.clone(), schedule.coef1[t]));
        initializers.push(scalar_f64(c2.clone(), schedule.coef2[t]));
        nodes.push(cast(format!("{p}x0_f64"), x0, DOUBLE));
        nodes.push(cast(format!("{p}x_f64"), x.clone(), DOUBLE));
        nodes.push(node(
            "Mul",
            format!("{p}a"),
            vec![c1, format!("{p}x0_f64")],
            format!("{p}a"),
            vec![],
        ));
        nodes.push(node(
            "Mul",
            format!("{p}b"),
            vec![c2, format!("{p}x_f64")],
            format!("{p}b"),
            vec![],
        ));
        nodes.push(node(
            "Add",
            format!("{p}sum"),
            vec![format!("{p}a"), format!("{p}b")],
            format!("{p}sum"),
            vec![],
        ));
        let next = if t == 0 { IPR.to_string() } else { format!("{p}x_next") };
        let mut last = cast(next.clone(), format!("{p}sum"), FLOAT);
        last.name = format!("{p}x_next");
        nodes.push(last);
        x = next;
    }
    let model = pb::ModelProto {
        ir_version: cpen.ir_version.max(den.ir_version),
        opset_import: cpen.opset_import.clone(),
        producer_name: "diffir triton-repo".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!(
            "DiffIR prior of '{}': CPEN and {} reverse diffusion steps unrolled; image 1x{c}xHxW + noise 1x{d} -> ipr 1x{d}",
            spec.name,
            schedule.timesteps()
        ),
        graph: Some(pb::GraphProto {
            name: format!("{}_prior", spec.name),
            node: nodes,
            initializer: initializers,
            input: vec![
                value_info(IMAGE, FLOAT, &[Ok(1), Ok(c), Err("height"), Err("width")]),
                value_info(NOISE, FLOAT, &[Ok(1), Ok(d)]),
            ],
            output: vec![value_info(IPR, FLOAT, &[Ok(1), Ok(d)])],
            ..Default::default()
        }),
        ..Default::default()
    };
    if den.opset_import != cpen.opset_import {
        return Err(Error::graph(
            GraphKind::Denoiser,
            "its opset imports differ from cpen's; re-export the bundle with one opset",
        ));
    }
    Ok(model.encode_to_vec())
}
