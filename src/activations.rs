//! How much memory one backbone call needs for its activations, read from the backbone graph itself: every
//! tensor's shape inferred for the concrete input (tract), then the graph walked in its execution order the
//! way onnxruntime's allocation planner lays out shapes it knows (views share their input's buffer,
//! element-wise ops may write over an input they read last, an output takes a dead buffer of its size). The
//! peak of that walk is the one activation model the CPU and GPU plans share; it holds for every bundle
//! whatever its widths, because it is the bundle's own graph.
//!
//! The weights are not counted (they are loaded once per session), nor what the allocators and kernels add:
//! the CPU plan multiplies by [`crate::plan::CPU_ACTIVATION_MARGIN`], the GPU plan by
//! [`crate::plan::GPU_WORKSPACE_MARGIN`].

use std::collections::HashMap;

use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::{DimLike, Factoid};

use crate::bundle::{Bundle, GraphKind, Precision};
use crate::error::{Error, Result};

/// The peak of one backbone call.
#[derive(Debug, Clone, PartialEq)]
pub struct Peak {
    /// Bytes of activations alive at once, at most.
    pub bytes: u64,
    /// The node during which the peak is reached.
    pub at: String,
}

/// Ops whose output is a view of their first input (onnxruntime gives them no buffer of their own).
const VIEWS: [&str; 6] = ["Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Dropout"];

/// Element-wise ops onnxruntime may run in place: the output reuses an input of the same size that no later
/// node reads.
const IN_PLACE: [&str; 14] = [
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Sqrt",
    "Erf",
    "Neg",
    "Abs",
    "Exp",
    "Clip",
];

/// The backbone's activation peak for `batch` tiles of `h` × `w` input pixels at `precision`.
pub fn backbone(bundle: &Bundle, batch: usize, (h, w): (usize, usize), precision: Precision) -> Result<Peak> {
    let bundle = bundle.with_precision(precision)?;
    let g = bundle.graph(GraphKind::Backbone);
    let kind = GraphKind::Backbone;
    let err = |e: String| Error::graph(kind, format!("{}: activation estimate: {e}", g.origin.display()));
    let inputs = [
        vec![batch, bundle.spec.input_channels, h, w],
        vec![batch, bundle.ipr_dim()],
    ];
    // One decode of the protobuf serves tract's shape inference and the walk over the nodes.
    let onnx = tract_onnx::onnx();
    let proto = onnx
        .proto_model_for_read(&mut &g.bytes[..])
        .map_err(|e| err(format!("not a readable ONNX model: {e}")))?;
    let model = onnx
        .model_for_proto_model(&proto)
        .map_err(|e| err(format!("tract cannot load it: {e}")))?;
    let sizes = tensor_bytes(model, &inputs).map_err(err)?;
    let graph = proto.graph.as_ref().ok_or_else(|| err("no graph".into()))?;
    peak_live(graph, &sizes).map_err(err)
}

/// Bytes per input pixel of one backbone call at `precision`, from the graph at a reference tile of 64
/// pixels (rounded to the size multiple): activations grow with the pixels of the call (the attention's
/// channel-by-channel maps do not, and are small).
pub fn bytes_per_pixel(bundle: &Bundle, precision: Precision) -> Result<f64> {
    static CACHE: std::sync::Mutex<Vec<(u64, usize, Precision, f64)>> = std::sync::Mutex::new(Vec::new());
    let g = bundle.graph(GraphKind::Backbone);
    // A graph is named by its length and a hash of its first and last 64 KiB (cheap on a 100 MB graph).
    let key = {
        use std::hash::{Hash, Hasher};
        let b = &g.bytes[..];
        let edge = b.len().min(1 << 16);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        b[..edge].hash(&mut h);
        b[b.len() - edge..].hash(&mut h);
        (h.finish(), b.len(), precision)
    };
    let cached = CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find_map(|&(p, l, q, v)| ((p, l, q) == key).then_some(v));
    if let Some(v) = cached {
        return Ok(v);
    }
    let m = bundle.spec.size_multiple.max(1);
    let t = crate::tiling::round_up(64, m);
    let v = backbone(bundle, 1, (t, t), precision)?.bytes as f64 / (t * t) as f64;
    CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((key.0, key.1, key.2, v));
    Ok(v)
}

/// The size in bytes of every tensor of a parsed ONNX graph (by the ONNX tensor's name) for float32 inputs of
/// these shapes, from tract's shape inference.
pub fn tensor_bytes(
    mut model: InferenceModel,
    inputs: &[Vec<usize>],
) -> std::result::Result<HashMap<String, u64>, String> {
    for (i, shape) in inputs.iter().enumerate() {
        model
            .set_input_fact(i, f32::fact(shape.clone()).into())
            .map_err(|e| e.to_string())?;
    }
    model.analyse(false).map_err(|e| format!("shape inference: {e:#}"))?;
    let mut out = HashMap::new();
    for node in model.nodes() {
        for (i, outlet) in node.outputs.iter().enumerate() {
            // Outputs carry the ONNX tensor's name as their label; the graph's inputs are named by their node.
            let Some(name) = model
                .outlet_label(OutletId::new(node.id, i))
                .or((i == 0).then_some(node.name.as_str()))
            else {
                continue;
            };
            let dt = outlet.fact.datum_type.concretize();
            let shape = outlet.fact.shape.concretize();
            let dims = shape.and_then(|s| s.iter().map(|d| d.to_usize().ok()).collect::<Option<Vec<usize>>>());
            if let (Some(dt), Some(dims)) = (dt, dims) {
                out.insert(name.to_string(), (dims.iter().product::<usize>() * dt.size_of()) as u64);
            }
        }
    }
    Ok(out)
}

/// The most bytes alive at once when `graph`'s nodes run in their order (ONNX graphs are stored in a valid
/// execution order), with `sizes` giving every tensor's bytes, planned the way onnxruntime's allocation
/// planner plans shapes it knows:
/// - a view (Reshape, Squeeze, …) shares its input's buffer;
/// - an element-wise op may write over an input of its size that it reads for the last time;
/// - any other output takes a dead buffer of exactly its size where there is one (the most recently freed
///   first), else a new one;
/// - a buffer is held from its first tensor's allocation to its last tensor's last use, so one reused
///   later is held in between (on the full-resolution deblurring model this triples the peak of freeing
///   every tensor at its last use).
///
/// The graph's inputs are alive from the start and never reused, its outputs to the end; initializers and
/// `Constant`s are weights, not counted.
pub fn peak_live(graph: &pb::GraphProto, sizes: &HashMap<String, u64>) -> std::result::Result<Peak, String> {
    let weights: std::collections::HashSet<&str> = graph
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .chain(
            graph
                .node
                .iter()
                .filter(|n| n.op_type == "Constant")
                .flat_map(|n| n.output.iter().map(String::as_str)),
        )
        .collect();
    let size = |name: &str| {
        sizes
            .get(name)
            .copied()
            .ok_or_else(|| format!("the size of tensor '{name}' is unknown"))
    };
    const FOREVER: usize = usize::MAX;
    // How many times each tensor is read; the graph's outputs are read after the last node.
    let mut reads: HashMap<&str, usize> = HashMap::new();
    for node in &graph.node {
        for i in node
            .input
            .iter()
            .filter(|i| !i.is_empty() && !weights.contains(i.as_str()))
        {
            *reads.entry(i.as_str()).or_default() += 1;
        }
    }
    struct Buffer {
        bytes: u64,
        /// The step of its first allocation (None: a graph input, alive from the start).
        first: Option<usize>,
        /// The step of its last use.
        last: usize,
        /// Reads still to come of the tensors it holds.
        pending: usize,
        /// A graph input: never reused.
        input: bool,
    }
    let mut buffers: Vec<Buffer> = vec![];
    let mut buffer_of: HashMap<&str, usize> = HashMap::new();
    for input in graph.input.iter().filter(|i| !weights.contains(i.name.as_str())) {
        buffer_of.insert(&input.name, buffers.len());
        buffers.push(Buffer {
            bytes: size(&input.name)?,
            first: None,
            last: 0,
            pending: reads.get(input.name.as_str()).copied().unwrap_or(0),
            input: true,
        });
    }
    let outputs: std::collections::HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    // Dead buffers, the most recently freed first.
    let mut dead: Vec<usize> = vec![];
    for (step, node) in graph.node.iter().enumerate() {
        let ins: Vec<usize> = node
            .input
            .iter()
            .filter(|i| !i.is_empty() && !weights.contains(i.as_str()))
            .filter_map(|i| buffer_of.get(i.as_str()).copied())
            .collect();
        let default_domain = node.domain.is_empty() || node.domain == "ai.onnx";
        let view = default_domain && VIEWS.contains(&node.op_type.as_str());
        let in_place = default_domain && IN_PLACE.contains(&node.op_type.as_str());
        let mut unread = vec![];
        for (k, out) in node.output.iter().enumerate() {
            if out.is_empty() || weights.contains(out.as_str()) {
                continue;
            }
            let pending = reads.get(out.as_str()).copied().unwrap_or(0) + usize::from(outputs.contains(out.as_str()));
            let bytes = size(out)?;
            let b = if view && k == 0 && !ins.is_empty() {
                ins[0]
            } else if let Some(&b) = (in_place && k == 0)
                .then(|| {
                    ins.iter()
                        .find(|&&b| !buffers[b].input && buffers[b].pending == 1 && buffers[b].bytes == bytes)
                })
                .flatten()
            {
                b
            } else if let Some(i) = dead.iter().position(|&b| buffers[b].bytes == bytes) {
                dead.remove(i)
            } else {
                buffers.push(Buffer {
                    bytes,
                    first: Some(step),
                    last: step,
                    pending: 0,
                    input: false,
                });
                buffers.len() - 1
            };
            buffer_of.insert(out, b);
            buffers[b].pending += pending;
            buffers[b].last = buffers[b].last.max(step);
            if outputs.contains(out.as_str()) {
                buffers[b].last = FOREVER;
            }
            if pending == 0 {
                unread.push(b);
            }
        }
        for b in ins.into_iter().chain(unread) {
            let buffer = &mut buffers[b];
            buffer.pending = buffer.pending.saturating_sub(1);
            buffer.last = buffer.last.max(step);
            if buffer.pending == 0 && !buffer.input && buffer.last != FOREVER && !dead.contains(&b) {
                dead.insert(0, b);
            }
        }
    }
    // Bytes held at each step: every buffer from its first allocation to its last use.
    let n = graph.node.len();
    let mut change = vec![0i128; n + 1];
    for b in &buffers {
        let from = b.first.unwrap_or(0);
        let to = b.last.min(n.saturating_sub(1));
        change[from] += b.bytes as i128;
        change[to + 1] -= b.bytes as i128;
    }
    let mut live = 0i128;
    let mut peak = Peak {
        bytes: 0,
        at: "(inputs)".into(),
    };
    for (step, node) in graph.node.iter().enumerate() {
        live += change[step];
        if live as u64 > peak.bytes {
            peak = Peak {
                bytes: live as u64,
                at: if node.name.is_empty() {
                    node.op_type.clone()
                } else {
                    node.name.clone()
                },
            };
        }
    }
    Ok(peak)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            name: name.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn value(name: &str) -> pb::ValueInfoProto {
        pb::ValueInfoProto {
            name: name.into(),
            ..Default::default()
        }
    }

    /// A U-net in miniature: x (100) → a (200) → b (50) → c (200) = up(b); d = a + c (in place over c);
    /// out = conv(d) (100). Reshape r of b is a view; w is a weight.
    #[test]
    fn the_peak_follows_allocation_and_last_use() {
        let graph = pb::GraphProto {
            input: vec![value("x")],
            output: vec![value("out")],
            initializer: vec![pb::TensorProto {
                name: "w".into(),
                ..Default::default()
            }],
            node: vec![
                node("Conv", "enc", &["x", "w"], &["a"]),
                node("Conv", "down", &["a", "w"], &["b"]),
                node("Reshape", "view", &["b", "w"], &["r"]),
                node("Resize", "up", &["r"], &["c"]),
                node("Add", "skip", &["a", "c"], &["d"]),
                node("Conv", "head", &["d", "w"], &["out"]),
            ],
            ..Default::default()
        };
        let sizes: HashMap<String, u64> = [
            ("x", 100),
            ("a", 200),
            ("b", 50),
            ("r", 50),
            ("c", 200),
            ("d", 200),
            ("out", 100),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let p = peak_live(&graph, &sizes).unwrap();
        // enc: x + a = 300 (x freed after: 200); down: a + b = 250; up: a + b + c = 450 (b freed after);
        // skip: d over c, a freed: 400 at most, 200 after; head: d + out = 300.
        assert_eq!(
            p,
            Peak {
                bytes: 450,
                at: "up".into()
            }
        );
        // Without the in-place add the skip would need a + c + d = 600.
        let mut no_reuse = graph.clone();
        no_reuse.node[4].op_type = "Concat".into();
        assert_eq!(
            peak_live(&no_reuse, &sizes).unwrap(),
            Peak {
                bytes: 600,
                at: "skip".into()
            }
        );
        // A dead buffer taken by a later tensor of its size is held in between: p (300) dies after s, q (300)
        // takes its buffer, so while t (250) is alive p's 300 bytes are too.
        let chain = pb::GraphProto {
            input: vec![value("x")],
            output: vec![value("q")],
            initializer: graph.initializer.clone(),
            node: vec![
                node("Conv", "p", &["x", "w"], &["p"]),
                node("Conv", "s", &["p", "w"], &["s"]),
                node("Conv", "t", &["s", "w"], &["t"]),
                node("Conv", "u", &["t", "w"], &["u"]),
                node("Conv", "q", &["u", "w"], &["q"]),
            ],
            ..Default::default()
        };
        let sizes2: HashMap<String, u64> = [("x", 10), ("p", 300), ("s", 10), ("t", 250), ("u", 10), ("q", 300)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        // t: p's buffer (held for q) + s + t = 560; freed at last use it would be s + t = 260.
        assert_eq!(
            peak_live(&chain, &sizes2).unwrap(),
            Peak {
                bytes: 560,
                at: "t".into()
            }
        );
        // A tensor of unknown size is an error that names it.
        let mut missing = sizes.clone();
        missing.remove("c");
        assert!(peak_live(&graph, &missing).unwrap_err().contains("'c'"));
    }
}
