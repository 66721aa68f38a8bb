//! The KServe v2 / Open Inference Protocol REST messages the server speaks: model metadata, and inference
//! with one BYTES input (the encoded image; optionally a second, `mask`) and one BYTES output. In JSON a
//! BYTES element is a string; binary data travels base64-encoded in it (the binary data extension is
//! refused by name). Every route also exists under `/versions/1`, the one version the metadata names.

use std::sync::Arc;

use axum::extract::{Path as UrlPath, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::body::ApiError;
use super::query::RestoreQuery;
use super::{is_ready, model_of, restore_request, AppState, ServedModel};
use crate::bundle::Task;

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
    /// The outputs asked for: there is one, `output`; another name is refused.
    #[serde(default)]
    pub outputs: Vec<RequestedOutput>,
}

/// One requested output: its name (its parameters are not read).
#[derive(Debug, Deserialize)]
pub struct RequestedOutput {
    pub name: String,
}

/// Request-level parameters: the same options as the v1 query string.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferParameters {
    #[serde(default, deserialize_with = "super::query::seed")]
    pub seed: Option<u64>,
    pub format: Option<String>,
    #[serde(default, deserialize_with = "super::query::tile")]
    pub tile: Option<usize>,
    /// The binary data extension's parameter: present only to be refused by name.
    pub binary_data_output: Option<serde_json::Value>,
}

/// One request input.
#[derive(Debug, Deserialize)]
pub struct RequestInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    /// Absent only with the binary data extension, which is refused.
    #[serde(default)]
    pub data: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The infer response.
#[derive(Debug, Serialize)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
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
    /// An error naming the first requested output that is not `output`.
    pub fn check_outputs(&self) -> Result<(), String> {
        match self.outputs.iter().find(|o| o.name != "output") {
            Some(o) => Err(format!(
                "unknown output '{}' (outputs: output)",
                crate::names::escaped_text(&o.name)
            )),
            None => Ok(()),
        }
    }

    /// The decoded `image` (and `mask`, for inpainting) inputs; each name at most once, no other inputs.
    pub fn images(&self, inpainting: bool) -> Result<(Vec<u8>, Option<Vec<u8>>), String> {
        let allowed: &[&str] = if inpainting { &["image", "mask"] } else { &["image"] };
        for (k, input) in self.inputs.iter().enumerate() {
            if !allowed.contains(&input.name.as_str()) {
                return Err(format!(
                    "unknown input '{}' (inputs: {})",
                    crate::names::escaped_text(&input.name),
                    allowed.join(", ")
                ));
            }
            if self.inputs[..k].iter().any(|i| i.name == input.name) {
                return Err(format!("input '{}' is given twice", input.name));
            }
        }
        let image = self.bytes_input("image")?.ok_or("no input named 'image'")?;
        Ok((image, self.bytes_input("mask")?))
    }

    /// The decoded bytes of BYTES input `name` (one element, base64), if present.
    fn bytes_input(&self, name: &str) -> Result<Option<Vec<u8>>, String> {
        use base64::Engine as _;
        let Some(input) = self.inputs.iter().find(|i| i.name == name) else {
            return Ok(None);
        };
        if input
            .parameters
            .as_ref()
            .is_some_and(|p| p.contains_key("binary_data_size"))
        {
            return Err(BINARY_UNSUPPORTED.into());
        }
        if input.datatype != "BYTES" {
            return Err(format!("input '{name}' must be BYTES, not {}", input.datatype));
        }
        let Some(data) = &input.data else {
            return Err(format!("input '{name}' has no data"));
        };
        if input.shape != [1] || data.len() != 1 {
            return Err(format!(
                "input '{name}' must hold one element (shape [1]); it has shape {:?} and {} elements",
                input.shape,
                data.len()
            ));
        }
        let text = data[0]
            .as_str()
            .ok_or_else(|| format!("input '{name}': a BYTES element is a base64 string"))?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Some)
            .map_err(|e| format!("input '{name}': not base64: {e}"))
    }
}

/// `GET /v2`: the server's metadata.
pub async fn server_metadata() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "name": "diffir",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": [],
    }))
}

/// `GET /v2/health/ready`.
pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let ready = is_ready(&state);
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(serde_json::json!({ "ready": ready }))).into_response()
}

/// The served model `name` at `version` ("1", the only one; None: unversioned routes).
fn versioned(state: &AppState, name: &str, version: Option<&str>) -> Result<Arc<ServedModel>, ApiError> {
    let model = model_of(state, name)?;
    match version {
        None | Some("1") => Ok(model),
        Some(v) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("model '{name}' has no version '{v}' (versions: 1)"),
        )),
    }
}

/// A model route's path: `/v2/models/{name}` or `/v2/models/{name}/versions/{version}`.
#[derive(Debug, Deserialize)]
pub struct ModelPath {
    name: String,
    version: Option<String>,
}

/// `GET /v2/models/{name}[/versions/{version}]`.
pub async fn model_metadata(State(state): State<Arc<AppState>>, UrlPath(p): UrlPath<ModelPath>) -> Response {
    match versioned(&state, &p.name, p.version.as_deref()) {
        Ok(m) => Json(metadata(&m.name, m.pipeline.bundle().task() == Task::Inpaint)).into_response(),
        Err(e) => e.v2(),
    }
}

/// `GET /v2/models/{name}[/versions/{version}]/ready`.
pub async fn model_ready(State(state): State<Arc<AppState>>, UrlPath(p): UrlPath<ModelPath>) -> Response {
    match versioned(&state, &p.name, p.version.as_deref()) {
        Ok(m) => {
            let ready = is_ready(&state);
            let code = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (code, Json(serde_json::json!({ "name": m.name, "ready": ready }))).into_response()
        }
        Err(e) => e.v2(),
    }
}

/// `POST /v2/models/{name}[/versions/{version}]/infer`.
pub async fn infer(State(state): State<Arc<AppState>>, UrlPath(p): UrlPath<ModelPath>, req: Request) -> Response {
    infer_inner(state, &p.name, p.version.as_deref(), req)
        .await
        .unwrap_or_else(ApiError::v2)
}

async fn infer_inner(
    state: Arc<AppState>,
    name: &str,
    version: Option<&str>,
    req: Request,
) -> Result<Response, ApiError> {
    use base64::Engine as _;
    let model = versioned(&state, name, version)?;
    if req.headers().contains_key("inference-header-content-length") {
        return Err(ApiError::bad_request(BINARY_UNSUPPORTED));
    }
    let body = super::body::read(req.into_body(), state.opts.max_body_bytes, state.opts.body_timeout).await?;
    let req: InferRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("not an inference request: {e}")))?;
    let inpainting = model.pipeline.bundle().task() == Task::Inpaint;
    req.check_outputs().map_err(ApiError::bad_request)?;
    let (image, mask) = req.images(inpainting).map_err(ApiError::bad_request)?;
    let params = req.parameters.unwrap_or_default();
    if params.binary_data_output.is_some() {
        return Err(ApiError::bad_request(BINARY_UNSUPPORTED));
    }
    let query = RestoreQuery {
        seed: params.seed,
        format: params.format,
        tile: params.tile,
    };
    let encoded = restore_request(state, model.clone(), image.into(), mask.map(Into::into), query).await?;
    let mut r = Json(InferResponse {
        model_name: model.name.clone(),
        model_version: "1".into(),
        id: req.id,
        outputs: vec![ResponseOutput {
            name: "output".into(),
            shape: vec![1],
            datatype: "BYTES".into(),
            data: vec![base64::engine::general_purpose::STANDARD.encode(&encoded.bytes)],
        }],
    })
    .into_response();
    for (k, v) in encoded.headers {
        if let Ok(v) = axum::http::HeaderValue::from_str(&super::header_safe(&v)) {
            r.headers_mut().insert(k, v);
        }
    }
    Ok(r)
}

/// The refusal of KServe's binary data extension, by name.
const BINARY_UNSUPPORTED: &str = "the KServe binary data extension (Inference-Header-Content-Length, \
binary_data_size, binary_data_output) is not supported: send each BYTES element base64-encoded in the JSON";

#[cfg(test)]
mod tests {
    use super::*;

    /// KServe parameters take a tile as a string as they take a seed.
    #[test]
    fn parameters_take_a_tile_and_a_seed_as_strings() {
        let params: InferParameters = serde_json::from_str(r#"{"tile": "64", "seed": "7"}"#).unwrap();
        assert_eq!((params.tile, params.seed), (Some(64), Some(7)));
    }

    /// A KServe request that asks for an output other than `output` is refused by name.
    #[test]
    fn unknown_requested_outputs_are_refused_by_name() {
        let req = |outputs: &str| -> InferRequest {
            serde_json::from_str(&format!(r#"{{"inputs": [], "outputs": {outputs}}}"#)).unwrap()
        };
        assert_eq!(req(r#"[{"name": "output"}]"#).check_outputs(), Ok(()));
        assert_eq!(req("[]").check_outputs(), Ok(()));
        let e = req(r#"[{"name": "output"}, {"name": "mask"}]"#)
            .check_outputs()
            .unwrap_err();
        assert_eq!(e, "unknown output 'mask' (outputs: output)");
    }
}
