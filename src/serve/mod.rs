//! `diffir serve`: a long-running HTTP server that keeps models loaded. Image in, image out (`/v1`), the
//! KServe v2 REST protocol (`/v2`), health, readiness and Prometheus metrics, on axum/tokio. Restores run
//! off the async executor on a bounded pool, behind a bounded queue, each with a deadline.

mod kserve;
mod metrics;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest as _, Multipart, Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::image_io::{self, OutputFormat, WriteOptions};
use crate::pipeline::{Control, Finish, Pipeline, Tiling};
use crate::sampler;

pub use metrics::Metrics;

/// How the server runs and what it accepts.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen (port 0: the OS picks one; the address is printed).
    pub listen: SocketAddr,
    /// Largest request body (413 above).
    pub max_body_bytes: usize,
    /// Largest image, in pixels, read from its header before decoding (413 above).
    pub max_pixels: u64,
    /// Restores running at once.
    pub max_concurrency: usize,
    /// Requests waiting for a worker before new ones get 503.
    pub queue: usize,
    /// Deadline of a restore request (504 after it; the work is cancelled between tiles).
    pub request_timeout: Duration,
    /// Bearer token every request but the health checks must carry.
    pub token: Option<String>,
    /// JPEG quality of JPEG outputs.
    pub jpeg_quality: u8,
}

/// A model the server keeps loaded.
pub struct ServedModel {
    /// The name requests use.
    pub name: String,
    /// The loaded pipeline.
    pub pipeline: Pipeline,
    /// The tiling the plan chose (`tile` in a request overrides its size).
    pub tiling: Tiling,
}

struct AppState {
    models: BTreeMap<String, Arc<ServedModel>>,
    opts: ServeOptions,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    metrics: Metrics,
}

/// Serve `models` until SIGTERM or SIGINT; then stop accepting, finish the requests in flight and return.
/// Prints `listening on http://ADDR` on stdout once bound.
pub fn run(models: Vec<ServedModel>, opts: ServeOptions) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Backend(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(serve(models, opts))
}

async fn serve(models: Vec<ServedModel>, opts: ServeOptions) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| Error::Backend(format!("cannot listen on {}: {e}", opts.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Backend(format!("listening socket: {e}")))?;
    let state = Arc::new(AppState {
        models: models.into_iter().map(|m| (m.name.clone(), Arc::new(m))).collect(),
        permits: Arc::new(Semaphore::new(opts.max_concurrency.max(1))),
        waiting: AtomicUsize::new(0),
        metrics: Metrics::new(),
        opts,
    });
    let app = router(state.clone());
    println!("listening on http://{addr}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| Error::Backend(format!("server: {e}")))?;
    eprintln!("{{\"event\":\"shutdown\",\"addr\":\"{addr}\"}}");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

fn router(state: Arc<AppState>) -> Router {
    let limit = state.opts.max_body_bytes;
    let protected = Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{name}/restore", post(restore_v1))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/infer", post(infer_v2))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/v2/health/live",
            get(|| async { Json(serde_json::json!({ "live": true })) }),
        )
        .route("/v2/health/ready", get(ready_v2))
        .merge(protected)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), log_and_count))
        .with_state(state)
}

/// An error answer: status and a one-line reason, as plain text (v1) or the protocol's JSON (v2).
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    msg: String,
    retry_after: bool,
}

impl ApiError {
    fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError {
            status,
            msg: msg.into(),
            retry_after: false,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, format!("{}\n", self.msg)).into_response();
        if self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// The same error as KServe v2 JSON.
fn v2_error(e: ApiError) -> Response {
    let retry = e.retry_after;
    let mut r = (e.status, Json(kserve::ErrorBody { error: e.msg })).into_response();
    if retry {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// The library's errors as HTTP answers.
fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Input { .. } | Error::Shape(_) => StatusCode::BAD_REQUEST,
        Error::Cancelled => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Bearer-token check (constant-time) for everything but the health checks.
async fn auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.opts.token {
        use subtle::ConstantTimeEq as _;
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compare fixed-length digests so neither the content nor the length of the token leaks in time.
        use sha2::Digest as _;
        let (a, b) = (
            sha2::Sha256::digest(given.as_bytes()),
            sha2::Sha256::digest(token.as_bytes()),
        );
        if !bool::from(a.as_slice().ct_eq(b.as_slice())) {
            let mut r = (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(req).await
}

/// One structured log line per request, and the request counter.
async fn log_and_count(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let model = path
        .strip_prefix("/v1/models/")
        .or_else(|| path.strip_prefix("/v2/models/"))
        .and_then(|rest| rest.split('/').next())
        .filter(|m| state.models.contains_key(*m))
        .unwrap_or("-")
        .to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    state
        .metrics
        .requests
        .with_label_values(&[model.as_str(), &status.to_string()])
        .inc();
    let line = serde_json::json!({
        "method": method.as_str(),
        "path": path,
        "model": model,
        "status": status,
        "ms": (start.elapsed().as_secs_f64() * 1e4).round() / 10.0,
    });
    eprintln!("{line}");
    response
}

async fn list_models(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let models: Vec<_> = state
        .models
        .values()
        .map(|m| {
            let b = m.pipeline.bundle();
            serde_json::json!({
                "name": m.name,
                "task": b.task().as_str(),
                "scale": b.scale(),
                "backend": m.pipeline.backend_summary(),
                "runs_on": m.pipeline.runs_on(),
                "plan": m.pipeline.plan().to_string(),
                "precisions": b.precisions().iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(serde_json::json!({ "models": models }))
}

fn is_ready(state: &AppState) -> bool {
    !state.models.is_empty() && state.waiting.load(Ordering::SeqCst) < state.opts.queue.max(1)
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if is_ready(&state) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "queue full\n").into_response()
    }
}

async fn ready_v2(State(state): State<Arc<AppState>>) -> Response {
    let ready = is_ready(&state);
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(serde_json::json!({ "ready": ready }))).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

fn model_of(state: &AppState, name: &str) -> std::result::Result<Arc<ServedModel>, ApiError> {
    state.models.get(name).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no model '{name}' (served: {})",
                state.models.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
    })
}

async fn model_metadata(State(state): State<Arc<AppState>>, UrlPath(name): UrlPath<String>) -> Response {
    match model_of(&state, &name) {
        Ok(m) => Json(kserve::metadata(
            &m.name,
            m.pipeline.bundle().task() == crate::bundle::Task::Inpaint,
        ))
        .into_response(),
        Err(e) => v2_error(e),
    }
}

/// Options of one restore (the v1 query string, or v2 request parameters).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreQuery {
    seed: Option<u64>,
    format: Option<String>,
    tile: Option<usize>,
}

/// A finished restore: the encoded image, its content type, and headers to send.
struct Encoded {
    bytes: Vec<u8>,
    format: OutputFormat,
    headers: Vec<(&'static str, String)>,
}

fn content_type(f: OutputFormat) -> &'static str {
    match f {
        OutputFormat::Png => "image/png",
        OutputFormat::Jpeg => "image/jpeg",
        OutputFormat::Webp => "image/webp",
        OutputFormat::Tiff => "image/tiff",
        OutputFormat::Bmp => "image/bmp",
        OutputFormat::Npy => "application/octet-stream",
    }
}

fn parse_format(s: &str) -> std::result::Result<OutputFormat, ApiError> {
    let f = OutputFormat::from_extension(&s.to_ascii_lowercase())
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, format!("unknown format '{s}'")))?;
    if f == OutputFormat::Npy {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "format npy is not served"));
    }
    Ok(f)
}

/// Admission (bounded queue), a worker from the bounded pool, the restore off the executor with a deadline.
async fn restore_request(
    state: Arc<AppState>,
    model: Arc<ServedModel>,
    image: Bytes,
    mask: Option<Bytes>,
    query: RestoreQuery,
) -> std::result::Result<Encoded, ApiError> {
    let start = Instant::now();
    let format = query.format.as_deref().map(parse_format).transpose()?;
    let deadline = start + state.opts.request_timeout;
    // Bounded queue: requests beyond the workers wait, up to `queue` of them.
    let queued = state.waiting.fetch_add(1, Ordering::SeqCst);
    if queued >= state.opts.queue && state.permits.available_permits() == 0 {
        state.waiting.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError {
            retry_after: true,
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "queue full; retry later")
        });
    }
    state.metrics.queue_depth.inc();
    let permit = tokio::time::timeout_at(deadline.into(), state.permits.clone().acquire_owned()).await;
    state.waiting.fetch_sub(1, Ordering::SeqCst);
    state.metrics.queue_depth.dec();
    let permit = match permit {
        Ok(Ok(p)) => p,
        Ok(Err(_)) => return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down")),
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timed out waiting for a worker",
            ))
        }
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let work = {
        let (state, model, cancel) = (state.clone(), model.clone(), cancel.clone());
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            state.metrics.in_flight.inc();
            let r = restore_blocking(&state, &model, &image, mask.as_deref(), &query, format, &cancel);
            state.metrics.in_flight.dec();
            r
        })
    };
    let result = match tokio::time::timeout_at(deadline.into(), work).await {
        Err(_) => {
            cancel.store(true, Ordering::Relaxed);
            Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the restore took longer than {:.1} s and was abandoned",
                    state.opts.request_timeout.as_secs_f64()
                ),
            ))
        }
        Ok(Err(join)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the restore failed: {join}"),
        )),
        Ok(Ok(Err(e))) => Err(ApiError::new(status_of(&e), e.to_string())),
        Ok(Ok(Ok(encoded))) => Ok(encoded),
    };
    state
        .metrics
        .latency
        .with_label_values(&[model.name.as_str()])
        .observe(start.elapsed().as_secs_f64());
    result
}

/// Decode, restore and encode, exactly as `diffir restore` does for a file.
fn restore_blocking(
    state: &AppState,
    model: &ServedModel,
    image: &[u8],
    mask: Option<&[u8]>,
    query: &RestoreQuery,
    format: Option<OutputFormat>,
    cancel: &AtomicBool,
) -> Result<Encoded> {
    let p = &model.pipeline;
    let (picture, input_format) = image_io::decode_picture(image, Path::new("image"), state.opts.max_pixels)?;
    let mask = mask
        .map(|m| image_io::decode_mask(m, Path::new("mask"), state.opts.max_pixels))
        .transpose()?;
    let task = p.bundle().task();
    if task == crate::bundle::Task::Inpaint && mask.is_none() {
        return Err(Error::input(
            "request",
            "this is an inpainting model: send a multipart body with 'image' and 'mask' parts",
        ));
    }
    task.check_mask(mask.is_some())
        .map_err(|msg| Error::input("request", msg))?;
    let format = format.unwrap_or(input_format);
    format.check_can_hold(Path::new("output"), picture.alpha.is_some())?;
    let noise = sampler::seeded_noise(query.seed.unwrap_or(0), p.bundle().ipr_dim());
    let tiling = Tiling {
        tile: query.tile.unwrap_or(model.tiling.tile),
        overlap: model.tiling.overlap,
    };
    let control = Control {
        cancel: Some(cancel),
        progress: None,
    };
    let done = p.restore_picture(&picture, mask.as_ref(), &noise, &tiling, Finish::default(), &control)?;
    state
        .metrics
        .pixels
        .with_label_values(&[model.name.as_str()])
        .inc_by((picture.rgb.height * picture.rgb.width) as u64);
    let write = WriteOptions {
        quantize: p.quantize(),
        jpeg_quality: state.opts.jpeg_quality,
        overwrite: true,
    };
    let bytes = image_io::encode_picture(&done.image, &done.carry(&picture), &write, format)?;
    let t = &done.restored.timings;
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
    let headers = vec![
        ("x-diffir-time-ms", ms(t.total())),
        (
            "x-diffir-timings-ms",
            format!(
                "prepare={};cpen={};diffusion={};backbone={};assemble={}",
                ms(t.prepare),
                ms(t.cpen),
                ms(t.diffusion),
                ms(t.backbone),
                ms(t.assemble)
            ),
        ),
        ("x-diffir-tiles", done.restored.tiles.to_string()),
        (
            "x-diffir-backend",
            p.backend_summary().lines().next().unwrap_or_default().to_string(),
        ),
    ];
    Ok(Encoded { bytes, format, headers })
}

fn image_response(e: Encoded) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(e.format)));
    for (k, v) in e.headers {
        let clean: String = v
            .chars()
            .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
            .collect();
        if let Ok(v) = HeaderValue::from_str(&clean) {
            headers.insert(k, v);
        }
    }
    (StatusCode::OK, headers, e.bytes).into_response()
}

/// `POST /v1/models/{name}/restore`: an encoded image as the body, or multipart `image` + `mask` parts.
async fn restore_v1(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    query: std::result::Result<Query<RestoreQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> std::result::Result<Response, ApiError> {
    let model = model_of(&state, &name)?;
    let Query(query) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let limit = state.opts.max_body_bytes;
    let too_big = |e: &dyn std::fmt::Display| {
        let msg = e.to_string();
        if msg.contains("length limit") || msg.contains("too large") {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {limit} bytes (--max-body-bytes)"),
            )
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, format!("cannot read the body: {msg}"))
        }
    };
    let (image, mask) = if is_multipart {
        let mut mp = Multipart::from_request(req, &state)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
        let (mut image, mut mask) = (None, None);
        while let Some(field) = mp.next_field().await.map_err(|e| too_big(&e))? {
            let name = field.name().unwrap_or_default().to_string();
            let data = field.bytes().await.map_err(|e| too_big(&e))?;
            match name.as_str() {
                "image" => image = Some(data),
                "mask" => mask = Some(data),
                other => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        format!("unknown part '{other}' (parts: image, mask)"),
                    ))
                }
            }
        }
        let image = image.ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "no 'image' part"))?;
        (image, mask)
    } else {
        let body = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|e| too_big(&e))?;
        (body, None)
    };
    if image.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body is empty: send an encoded image",
        ));
    }
    restore_request(state, model, image, mask, query)
        .await
        .map(image_response)
}

/// `POST /v2/models/{name}/infer`: KServe v2 with BYTES input `image` (and `mask`) and output `output`.
async fn infer_v2(State(state): State<Arc<AppState>>, UrlPath(name): UrlPath<String>, body: Bytes) -> Response {
    use base64::Engine as _;
    let model = match model_of(&state, &name) {
        Ok(m) => m,
        Err(e) => return v2_error(e),
    };
    let req: kserve::InferRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return v2_error(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("not an inference request: {e}"),
            ))
        }
    };
    let inputs = req.bytes_input("image").and_then(|image| {
        let image = image.ok_or_else(|| "no input named 'image'".to_string())?;
        Ok((image, req.bytes_input("mask")?))
    });
    let (image, mask) = match inputs {
        Ok(v) => v,
        Err(e) => return v2_error(ApiError::new(StatusCode::BAD_REQUEST, e)),
    };
    let params = req.parameters.unwrap_or_default();
    let query = RestoreQuery {
        seed: params.seed,
        format: params.format,
        tile: params.tile,
    };
    match restore_request(state, model.clone(), image.into(), mask.map(Into::into), query).await {
        Ok(encoded) => Json(kserve::InferResponse {
            model_name: model.name.clone(),
            id: req.id,
            outputs: vec![kserve::ResponseOutput {
                name: "output".into(),
                shape: vec![1],
                datatype: "BYTES".into(),
                data: vec![base64::engine::general_purpose::STANDARD.encode(&encoded.bytes)],
            }],
        })
        .into_response(),
        Err(e) => v2_error(e),
    }
}
