//! ONNX graph rewrites applied when a GPU session is built, for ops that an execution provider runs slowly
//! or patterns it must see.
//!
//! onnxruntime's CUDA provider runs `ReduceL2` through cuDNN's generic tensor reduction. On DIRformer's L2
//! normalisation of q and k over H·W (128 rows of 65,536 values at LR 256) that took 5.5 ms against PyTorch's
//! 0.07 ms on an H200, 89 % of the realsr_x4 backbone's time (BENCHMARKS.md). `ReduceSum` runs on
//! onnxruntime's own reduction kernels, so `ReduceL2(x)` becomes `Sqrt(ReduceSum(Mul(x, x)))`: the same
//! formula, float32 throughout; only the summation order changes.

use prost::Message;
use tract_onnx::pb::{self, AttributeProto, NodeProto, TensorProto};

use crate::onnx_proto::{attr, float_values, node, opset, ATTR_INT, ATTR_INTS, INT64};

/// Rewrite every `ReduceL2` of the main graph as `Sqrt(ReduceSum(Mul(x, x)))`, keeping its axes and keepdims.
/// Returns the new model bytes, or None when the graph has no `ReduceL2`.
pub fn reduce_l2_as_sum_of_squares(onnx: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut model = pb::ModelProto::decode(onnx).map_err(|e| format!("not a readable ONNX model: {e}"))?;
    let opset = opset(&model);
    let Some(graph) = model.graph.as_mut() else {
        return Err("the model has no graph".into());
    };
    if !graph
        .node
        .iter()
        .any(|n| n.op_type == "ReduceL2" && n.domain.is_empty())
    {
        return Ok(None);
    }
    let mut nodes = Vec::with_capacity(graph.node.len() + 16);
    let mut initializers = vec![];
    for (i, n) in std::mem::take(&mut graph.node).into_iter().enumerate() {
        if n.op_type != "ReduceL2" || !n.domain.is_empty() {
            nodes.push(n);
            continue;
        }
        let (Some(x), Some(y)) = (n.input.first(), n.output.first()) else {
            return Err(format!("ReduceL2 node '{}' has no input or output", n.name));
        };
        let base = format!("diffir_rewrite/reduce_l2_{i}");
        let keepdims = attr(&n, "keepdims").cloned();
        let axes_attr = attr(&n, "axes").map(|a| a.ints.clone());
        let axes_input = n.input.get(1).filter(|s| !s.is_empty()).cloned();
        let (sq, sum) = (format!("{base}/square"), format!("{base}/sum"));
        nodes.push(node("Mul", sq.clone(), vec![x.clone(), x.clone()], sq.clone(), vec![]));
        let mut sum_attrs: Vec<AttributeProto> = keepdims.into_iter().collect();
        let mut sum_inputs = vec![sq];
        if opset >= 13 {
            // ReduceSum takes its axes as an input from opset 13 on.
            if let Some(a) = axes_input {
                sum_inputs.push(a);
            } else if let Some(axes) = axes_attr {
                let name = format!("{base}/axes");
                initializers.push(TensorProto {
                    dims: vec![axes.len() as i64],
                    data_type: INT64,
                    int64_data: axes,
                    name: name.clone(),
                    ..Default::default()
                });
                sum_inputs.push(name);
            }
        } else if let Some(axes) = axes_attr {
            sum_attrs.push(AttributeProto {
                name: "axes".into(),
                r#type: ATTR_INTS,
                ints: axes,
                ..Default::default()
            });
        }
        nodes.push(node("ReduceSum", sum.clone(), sum_inputs, sum.clone(), sum_attrs));
        nodes.push(node("Sqrt", format!("{base}/sqrt"), vec![sum], y.clone(), vec![]));
    }
    graph.node = nodes;
    graph.initializer.extend(initializers);
    Ok(Some(model.encode_to_vec()))
}
/// Whether a `Conv` node's attributes leave it a plain 1×1 convolution (stride 1, no padding, one group).
fn plain_pointwise(n: &NodeProto) -> bool {
    n.attribute.iter().all(|a| match a.name.as_str() {
        "kernel_shape" | "strides" | "dilations" => a.ints.iter().all(|&v| v == 1),
        "pads" => a.ints.iter().all(|&v| v == 0),
        "group" => a.i == 1,
        "auto_pad" => a.s.is_empty() || a.s == b"NOTSET" || a.s == b"VALID",
        _ => false,
    })
}

/// Undo the export-time rewrite `channel_means_as_conv` (export/diffir_export/graph_opt.py): every 1×1
/// `Conv` without bias whose weight is 1 × C × 1 × 1 of the value 1/C becomes `ReduceMean(axes=[1],
/// keepdims=1)` again. TensorRT keeps a LayerNorm in fp32 under fp16 (`trt_layer_norm_fp32_fallback`) by
/// finding its `Pow` → `ReduceMean` pattern, which the export rewrite hides; the CPU speed it bought does not
/// matter on TensorRT. Returns the new model bytes, or None when there is nothing to undo.
pub fn channel_means_as_reduce_mean(onnx: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut model = pb::ModelProto::decode(onnx).map_err(|e| format!("not a readable ONNX model: {e}"))?;
    let opset = opset(&model);
    let Some(graph) = model.graph.as_mut() else {
        return Err("the model has no graph".into());
    };
    let mean_weights: std::collections::HashSet<String> = graph
        .initializer
        .iter()
        .filter(|t| {
            let c = match t.dims.as_slice() {
                [1, c, 1, 1] if *c > 0 => *c as f32,
                _ => return false,
            };
            float_values(t)
                .is_some_and(|(_, v)| v.len() == c as usize && v.iter().all(|&w| (w * c - 1.0).abs() <= 1e-6))
        })
        .map(|t| t.name.clone())
        .collect();
    let is_mean = |n: &NodeProto| {
        n.op_type == "Conv"
            && n.domain.is_empty()
            && n.input.len() == 2
            && mean_weights.contains(&n.input[1])
            && plain_pointwise(n)
    };
    if !graph.node.iter().any(is_mean) {
        return Ok(None);
    }
    let axes_name = "diffir_rewrite/channel_axis".to_string();
    let mut used = std::collections::HashSet::new();
    let mut nodes = Vec::with_capacity(graph.node.len());
    for n in std::mem::take(&mut graph.node) {
        if !is_mean(&n) {
            used.extend(n.input.iter().cloned());
            nodes.push(n);
            continue;
        }
        let mut attributes = vec![AttributeProto {
            name: "keepdims".into(),
            r#type: ATTR_INT,
            i: 1,
            ..Default::default()
        }];
        let mut inputs = vec![n.input[0].clone()];
        if opset >= 18 {
            // ReduceMean takes its axes as an input from opset 18 on.
            inputs.push(axes_name.clone());
        } else {
            attributes.push(AttributeProto {
                name: "axes".into(),
                r#type: ATTR_INTS,
                ints: vec![1],
                ..Default::default()
            });
        }
        nodes.push(node(
            "ReduceMean",
            format!("{}/as_reduce_mean", n.name),
            inputs,
            n.output[0].clone(),
            attributes,
        ));
    }
    graph.node = nodes;
    // The mean weights no other node reads go.
    graph
        .initializer
        .retain(|t| !mean_weights.contains(&t.name) || used.contains(&t.name));
    if opset >= 18 {
        graph.initializer.push(TensorProto {
            dims: vec![1],
            data_type: INT64,
            int64_data: vec![1],
            name: axes_name,
            ..Default::default()
        });
    }
    Ok(Some(model.encode_to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reduce_l2_model(opset: i64, axes_as_input: bool) -> Vec<u8> {
        let mut n = node("ReduceL2", "l2".into(), vec!["x".into()], "y".into(), vec![]);
        n.attribute.push(AttributeProto {
            name: "keepdims".into(),
            r#type: ATTR_INT,
            i: 1,
            ..Default::default()
        });
        let mut initializer = vec![];
        if axes_as_input {
            n.input.push("ax".into());
            initializer.push(TensorProto {
                dims: vec![1],
                data_type: INT64,
                int64_data: vec![-1],
                name: "ax".into(),
                ..Default::default()
            });
        } else {
            n.attribute.push(AttributeProto {
                name: "axes".into(),
                r#type: ATTR_INTS,
                ints: vec![-1],
                ..Default::default()
            });
        }
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: opset,
            }],
            graph: Some(pb::GraphProto {
                node: vec![n],
                initializer,
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn rewritten(bytes: &[u8]) -> pb::GraphProto {
        let out = reduce_l2_as_sum_of_squares(bytes).unwrap().expect("rewritten");
        pb::ModelProto::decode(&out[..]).unwrap().graph.unwrap()
    }

    #[test]
    fn opset_17_axes_attribute_become_an_initializer() {
        let g = rewritten(&reduce_l2_model(17, false));
        let ops: Vec<_> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Mul", "ReduceSum", "Sqrt"]);
        assert_eq!(g.node[0].input, ["x", "x"]);
        assert_eq!(g.node[2].output, ["y"]);
        let axes = g.initializer.iter().find(|t| t.name == g.node[1].input[1]).unwrap();
        assert_eq!(axes.int64_data, [-1]);
        assert_eq!(attr(&g.node[1], "keepdims").unwrap().i, 1);
    }

    #[test]
    fn opset_18_axes_input_is_reused() {
        let g = rewritten(&reduce_l2_model(18, true));
        assert_eq!(g.node[1].input[1], "ax");
        assert_eq!(g.initializer.len(), 1);
    }

    #[test]
    fn opset_11_keeps_axes_as_an_attribute() {
        let g = rewritten(&reduce_l2_model(11, false));
        assert_eq!(g.node[1].input.len(), 1);
        assert_eq!(attr(&g.node[1], "axes").unwrap().ints, [-1]);
    }

    #[test]
    fn graphs_without_reduce_l2_are_left_alone_and_garbage_is_an_error() {
        let mut m = pb::ModelProto::decode(&reduce_l2_model(17, false)[..]).unwrap();
        m.graph.as_mut().unwrap().node[0].op_type = "ReduceSum".into();
        assert_eq!(reduce_l2_as_sum_of_squares(&m.encode_to_vec()).unwrap(), None);
        assert!(reduce_l2_as_sum_of_squares(b"\xff\xff not onnx").is_err());
    }
}
