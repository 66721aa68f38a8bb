//! Building and reading ONNX protobuf values (through tract's generated types): the element and attribute
//! type numbers, a node, an attribute, the opset, an initializer's float32 values. The graph rewrites, the
//! shared weights and the Triton prior graph all use these one copies.

use tract_onnx::pb::{self, AttributeProto, NodeProto, TensorProto};

/// ONNX's element type number of float32.
pub const FLOAT: i32 = 1;
/// ONNX's element type number of int64.
pub const INT64: i32 = 7;
/// ONNX's element type number of float64.
pub const DOUBLE: i32 = 11;
/// ONNX's attribute type number of one integer.
pub const ATTR_INT: i32 = 2;
/// ONNX's attribute type number of a list of integers.
pub const ATTR_INTS: i32 = 7;
/// ONNX's `data_location` of a tensor stored outside the model file.
const EXTERNAL: i32 = 1;

/// A node of the default domain with one output.
pub fn node(op: &str, name: String, inputs: Vec<String>, output: String, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs,
        output: vec![output],
        name,
        op_type: op.into(),
        attribute,
        ..Default::default()
    }
}

/// A node's attribute by name.
pub fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// An integer attribute.
pub fn int_attr(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: ATTR_INT,
        i: value,
        ..Default::default()
    }
}

/// The default-domain opset the model imports.
pub fn opset(model: &pb::ModelProto) -> i64 {
    model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(1, |o| o.version)
}

/// The shape and float32 values of an initializer stored in the model (`float_data`, or little-endian
/// `raw_data`); None for other types, external data, or a payload that does not match its shape.
pub fn float_values(t: &TensorProto) -> Option<(Vec<usize>, Vec<f32>)> {
    if t.data_type != FLOAT || t.data_location == Some(EXTERNAL) {
        return None;
    }
    let shape: Vec<usize> = t.dims.iter().map(|&d| usize::try_from(d).ok()).collect::<Option<_>>()?;
    let n: usize = shape.iter().product();
    let data: Vec<f32> = if !t.raw_data.is_empty() {
        if t.raw_data.len() != n * 4 {
            return None;
        }
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        if t.float_data.len() != n {
            return None;
        }
        t.float_data.clone()
    };
    Some((shape, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both encodings of an initializer give its values; a payload that contradicts the shape gives none.
    #[test]
    fn initializer_values_from_either_encoding() {
        let raw = TensorProto {
            data_type: FLOAT,
            dims: vec![2],
            raw_data: [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        };
        assert_eq!(float_values(&raw), Some((vec![2], vec![1.5, -2.0])));
        let listed = TensorProto {
            data_type: FLOAT,
            dims: vec![1, 2],
            float_data: vec![3.0, 4.0],
            ..Default::default()
        };
        assert_eq!(float_values(&listed), Some((vec![1, 2], vec![3.0, 4.0])));
        let short = TensorProto {
            dims: vec![3],
            ..listed.clone()
        };
        assert_eq!(float_values(&short), None);
        let ints = TensorProto {
            data_type: INT64,
            ..listed
        };
        assert_eq!(float_values(&ints), None);
        let n = node("Relu", "r".into(), vec!["x".into()], "y".into(), vec![int_attr("k", 3)]);
        assert_eq!(attr(&n, "k").map(|a| a.i), Some(3));
        assert!(attr(&n, "missing").is_none());
    }
}
