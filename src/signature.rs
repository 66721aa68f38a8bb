//! What an ONNX graph declares: its inputs and outputs with their element types and shapes, read once
//! through tract's ONNX protobuf types, so that nothing else in the crate needs them to check a bundle.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::graph_kind::GraphKind;

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

/// Inputs and outputs an ONNX file declares (initializers excluded).
pub fn onnx_signature(bytes: &[u8]) -> std::result::Result<(Vec<IoSignature>, Vec<IoSignature>), String> {
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
