//! One copy of a graph's weights for all of its onnxruntime sessions, so a CPU plan's memory does not grow
//! with its worker count.
//!
//! A CPU plan runs one tile per worker, and onnxruntime sessions serialise their runs, so every worker holds
//! its own session of the backbone. By default each session also holds its own copy of the weights: about
//! 116 MiB per worker at start for a real-size realsr_x2 (BENCHMARKS.md, "Memory per worker"). Here the graph
//! is optimised once, and the optimised graph's float32 weights are decoded once into onnxruntime values
//! that every session of the graph is given as shared initializers (`AddInitializer`); the sessions load the
//! optimised graph without optimising it again, so nothing folds the shared weights into new copies. One
//! prepacked-weights container lets them share the packed (GEMM-ready) forms too. The shared values are the
//! model's own, so the results are the same as without sharing.

use std::sync::Arc;

use ort::session::builder::PrepackedWeights;
use ort::value::{DynValue, Tensor as OrtTensor};
use prost::Message;
use tract_onnx::pb;

use crate::onnx_proto::float_values;

/// Weights smaller than this many values stay in each session's model: shape constants and scalars that the
/// optimiser folds, where sharing saves nothing.
pub const MIN_SHARED_VALUES: usize = 1024;

/// A graph's optimised model, its shared float32 initializers, and the prepacked-weights container its
/// sessions share. Sessions keep what they use (the values and the container); this is dropped once the
/// graph's sessions are built.
pub struct SharedWeights {
    /// The model the sessions load: onnxruntime's own optimised form of the graph, so that the sessions
    /// (which load it without optimising) use the shared values as they are rather than folding new copies.
    pub model: Vec<u8>,
    /// (initializer name, value), in the model's order.
    pub values: Vec<(String, Arc<DynValue>)>,
    /// The container onnxruntime keeps the packed forms of the shared weights in.
    pub prepacked: PrepackedWeights,
    /// The cache file the model was read from, if it was.
    pub cached: Option<std::path::PathBuf>,
}

impl SharedWeights {
    /// Decode the float32 initializers of at least [`MIN_SHARED_VALUES`] values that `model` stores in
    /// itself (not as external data). Err: one line saying why the model cannot be read.
    pub fn from_model(model: Vec<u8>) -> Result<SharedWeights, String> {
        let proto = pb::ModelProto::decode(model.as_slice()).map_err(|e| format!("not a readable ONNX model: {e}"))?;
        let graph = proto.graph.ok_or("the model has no graph")?;
        let mut values = vec![];
        for t in graph.initializer {
            let Some((shape, data)) = float_values(&t) else {
                continue;
            };
            if data.len() < MIN_SHARED_VALUES {
                continue;
            }
            let value = OrtTensor::from_array((shape, data))
                .map_err(|e| format!("initializer {}: {e}", t.name))?
                .into_dyn();
            values.push((t.name, Arc::new(value)));
        }
        Ok(SharedWeights {
            model,
            values,
            prepacked: PrepackedWeights::new(),
            cached: None,
        })
    }
}
