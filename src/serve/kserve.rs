//! The KServe v2 / Open Inference Protocol REST messages the server speaks: model metadata, and inference
//! with one BYTES input (the encoded image; optionally a second, `mask`) and one BYTES output. In JSON a
//! BYTES element is a string; binary data travels base64-encoded in it.

use serde::{Deserialize, Serialize};

/// `GET /v2/models/{name}`.
#[derive(Debug, Serialize)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

/// One input or output in the metadata.
#[derive(Debug, Serialize)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

/// `POST /v2/models/{name}/infer` body.
#[derive(Debug, Deserialize)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Option<InferParameters>,
    pub inputs: Vec<RequestInput>,
    #[serde(default)]
    #[allow(dead_code)]
    pub outputs: Option<Vec<serde_json::Value>>,
}

/// Request-level parameters: the same options as the v1 query string.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferParameters {
    pub seed: Option<u64>,
    pub format: Option<String>,
    pub tile: Option<usize>,
}

/// One request input.
#[derive(Debug, Deserialize)]
pub struct RequestInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    pub data: Vec<serde_json::Value>,
}

/// The infer response.
#[derive(Debug, Serialize)]
pub struct InferResponse {
    pub model_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<ResponseOutput>,
}

/// One response output.
#[derive(Debug, Serialize)]
pub struct ResponseOutput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    pub data: Vec<String>,
}

/// The protocol's error body.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: String,
}

/// The metadata of a served model: input `image` (and `mask` for inpainting), output `output`.
pub fn metadata(name: &str, inpainting: bool) -> ModelMetadata {
    let bytes = |n: &str| TensorMetadata {
        name: n.into(),
        datatype: "BYTES".into(),
        shape: vec![1],
    };
    let mut inputs = vec![bytes("image")];
    if inpainting {
        inputs.push(bytes("mask"));
    }
    ModelMetadata {
        name: name.into(),
        versions: vec!["1".into()],
        platform: "diffir".into(),
        inputs,
        outputs: vec![bytes("output")],
    }
}

impl InferRequest {
    /// The decoded bytes of BYTES input `name` (one element, base64), if present.
    pub fn bytes_input(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        use base64::Engine as _;
        let Some(input) = self.inputs.iter().find(|i| i.name == name) else {
            return Ok(None);
        };
        if input.datatype != "BYTES" {
            return Err(format!("input '{name}' must be BYTES, not {}", input.datatype));
        }
        if input.shape != [1] || input.data.len() != 1 {
            return Err(format!(
                "input '{name}' must hold one element (shape [1]); it has shape {:?} and {} elements",
                input.shape,
                input.data.len()
            ));
        }
        let text = input.data[0]
            .as_str()
            .ok_or_else(|| format!("input '{name}': a BYTES element is a base64 string"))?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Some)
            .map_err(|e| format!("input '{name}': not base64: {e}"))
    }
}
