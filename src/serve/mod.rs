//! `diffir serve`: a long-running HTTP server that keeps models loaded. Image in, image out (`/v1`), the
//! KServe v2 REST protocol (`/v2`), health, readiness and Prometheus metrics, on axum/tokio. Restores run
//! off the async executor on a bounded pool, behind a bounded queue, each with a deadline.

mod body;
mod conn;
mod kserve;
mod metrics;
mod query;
mod tiles;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest as _, Multipart, Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};
use crate::image_io::{self, OutputFormat, WriteOptions};
use crate::pipeline::{Control, Finish, Pipeline};
use crate::sampler;
use crate::tiling::Tiling;

use body::ApiError;
pub use conn::ConnLimits;
pub use metrics::Metrics;
use query::RestoreQuery;
pub use tiles::{default_request_tiles, MIN_REQUEST_TILE};

/// How the server runs and what it accepts.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen (port 0: the OS picks one; the address is printed).
    pub listen: SocketAddr,
    /// Largest request body (413 above, from `Content-Length` before reading where it is declared).
    pub max_body_bytes: usize,
    /// Time a request body may take to arrive in full (408 after it).
    pub body_timeout: Duration,
    /// Connection limit, header/idle timeout and shutdown deadline.
    pub conn: ConnLimits,
    /// Largest image, in pixels, read from its header before decoding (413 above).
    pub max_pixels: u64,
    /// Restores running at once.
    pub max_concurrency: usize,
    /// Requests waiting for a worker before new ones get 503.
    pub queue: usize,
    /// Deadline of a restore request (504 after it; the work is cancelled between tiles, and inside a
    /// whole-image run on onnxruntime).
    pub request_timeout: Duration,
    /// Bearer token every request but the health checks must carry.
    pub token: Option<String>,
    /// JPEG quality of JPEG outputs.
    pub jpeg_quality: u8,
    /// Memory one restore's backbone activations may take (the request's estimate is checked before work
    /// starts; 413 above); None: not checked (GPU plans, where the tile sizes bound it).
    pub memory_per_restore: Option<f64>,
}

/// A model the server keeps loaded.
pub struct ServedModel {
    /// The name requests use.
    pub name: String,
    /// The loaded pipeline (its tiling is the one a request gets unless it asks for another tile).
    pub pipeline: Pipeline,
    /// Tile sizes a request may choose with `tile` (0 among them: whole images).
    pub request_tiles: Vec<usize>,
}

pub(crate) struct AppState {
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
        .map_err(|source| Error::Listen {
            what: "cannot start the async runtime".into(),
            source,
        })?;
    let r = runtime.block_on(serve(models, opts));
    // Restores still running after the drain deadline were told to stop; do not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    r
}

async fn serve(models: Vec<ServedModel>, opts: ServeOptions) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| Error::Listen {
            what: format!("cannot listen on {}", opts.listen),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Listen {
        what: format!("listening socket on {}", opts.listen),
        source,
    })?;
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
    let limits = state.opts.conn;
    let dropped = conn::serve(listener, app, limits, &state.metrics).await;
    eprintln!(
        "{}",
        serde_json::json!({"event": "shutdown", "addr": addr.to_string(), "dropped_connections": dropped})
    );
    Ok(())
}

fn router(state: Arc<AppState>) -> Router {
    let limit = state.opts.max_body_bytes;
    let protected = Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{name}/restore", post(restore_v1))
        .route("/v2", get(kserve::server_metadata))
        .route("/v2/models/{name}", get(kserve::model_metadata))
        .route("/v2/models/{name}/ready", get(kserve::model_ready))
        .route("/v2/models/{name}/infer", post(kserve::infer))
        .route("/v2/models/{name}/versions/{version}", get(kserve::model_metadata))
        .route("/v2/models/{name}/versions/{version}/ready", get(kserve::model_ready))
        .route("/v2/models/{name}/versions/{version}/infer", post(kserve::infer))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route(
            "/v2/health/live",
            get(|| async { Json(serde_json::json!({ "live": true })) }),
        )
        .route("/v2/health/ready", get(kserve::ready))
        .merge(protected)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), refuse_declared_too_large))
        .layer(middleware::from_fn_with_state(state.clone(), log_and_count))
        .with_state(state)
}

/// A declared body over the limit is refused before any of it is read, in the route's format.
async fn refuse_declared_too_large(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    match body::check_declared(&req, state.opts.max_body_bytes) {
        Ok(()) => next.run(req).await,
        Err(e) => e.for_path(req.uri().path()),
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
            .and_then(bearer_token)
            .unwrap_or("");
        // Compare fixed-length digests so neither the content nor the length of the token leaks in time.
        use sha2::Digest as _;
        let (a, b) = (
            sha2::Sha256::digest(given.as_bytes()),
            sha2::Sha256::digest(token.as_bytes()),
        );
        if !bool::from(a.as_slice().ct_eq(b.as_slice())) {
            let mut r =
                ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token").for_path(req.uri().path());
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(req).await
}

/// The token of an `Authorization` value in the Bearer scheme (the scheme name in any case, RFC 9110).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
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
                "backend": m.pipeline.backend().summary(crate::plan::Words::Flags),
                "runs_on": m.pipeline.backend().runs_on.to_string(),
                "plan": m.pipeline.plan().to_string(),
                "precisions": b.precisions().iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(serde_json::json!({ "models": models }))
}

pub(crate) fn is_ready(state: &AppState) -> bool {
    !state.models.is_empty() && state.waiting.load(Ordering::SeqCst) < state.opts.queue.max(1)
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if is_ready(&state) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "queue full\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    for m in state.models.values() {
        if let Some(n) = m.pipeline.cached_plans() {
            state
                .metrics
                .cached_plans
                .with_label_values(&[m.name.as_str()])
                .set(n as i64);
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

pub(crate) fn model_of(state: &AppState, name: &str) -> std::result::Result<Arc<ServedModel>, ApiError> {
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

/// A finished restore: the encoded image, its content type, and headers to send.
pub(crate) struct Encoded {
    pub bytes: Vec<u8>,
    pub format: OutputFormat,
    pub headers: Vec<(&'static str, String)>,
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
pub(crate) async fn restore_request(
    state: Arc<AppState>,
    model: Arc<ServedModel>,
    image: Bytes,
    mask: Option<Bytes>,
    query: RestoreQuery,
) -> std::result::Result<Encoded, ApiError> {
    let start = Instant::now();
    let checked = Checked {
        seed: query.seed.unwrap_or(0),
        tile: tiles::request_tile(&model, query.tile)?,
        format: query.format.as_deref().map(parse_format).transpose()?,
    };
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
    // The client gone or its connection dropped at shutdown: the restore stops too.
    let _stop_with_request = CancelOnDrop(cancel.clone());
    let work = {
        let (state, model, cancel) = (state.clone(), model.clone(), cancel.clone());
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            state.metrics.in_flight.inc();
            let r = restore_blocking(&state, &model, &image, mask.as_deref(), &checked, &cancel);
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
        Ok(Ok(Err(e))) => Err(ApiError::from_error(&e)),
        Ok(Ok(Ok(encoded))) => Ok(encoded),
    };
    state
        .metrics
        .latency
        .with_label_values(&[model.name.as_str()])
        .observe(start.elapsed().as_secs_f64());
    result
}

/// Sets the flag when dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A request's options, checked before it waits for a worker.
#[derive(Clone, Copy)]
struct Checked {
    /// The seed of the prior's initial noise.
    seed: u64,
    /// The backbone tile (one of the served tiles; 0 = whole).
    tile: usize,
    /// The output format; None: the input's.
    format: Option<OutputFormat>,
}

/// Decode, restore and encode, exactly as `diffir restore` does for a file.
fn restore_blocking(
    state: &AppState,
    model: &ServedModel,
    image: &[u8],
    mask: Option<&[u8]>,
    checked: &Checked,
    cancel: &AtomicBool,
) -> Result<Encoded> {
    let Checked { seed, tile, format } = *checked;
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
    let noise = sampler::seeded_noise(seed, p.bundle().ipr_dim());
    tiles::check_memory(state, model, tile, (picture.rgb.height, picture.rgb.width))?;
    let tiling = Tiling {
        tile,
        overlap: p.tiling().overlap.min(tile / 2),
    };
    let control = Control {
        cancel: Some(cancel),
        progress: None,
        noise: Some(&noise),
        tiling: Some(tiling),
        prior: None,
    };
    let done = p.restore_picture(&picture, mask.as_ref(), Finish::default(), &control)?;
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
    let mut headers = vec![
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
            p.backend()
                .summary(crate::plan::Words::Flags)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
        ),
    ];
    if !picture.notes.is_empty() {
        headers.push(("x-diffir-note", picture.notes.join("; ")));
    }
    Ok(Encoded { bytes, format, headers })
}

/// A header value from text: what is not visible ASCII becomes '?'.
fn header_safe(v: &str) -> String {
    v.chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
        .collect()
}

fn image_response(e: Encoded) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(e.format)));
    for (k, v) in e.headers {
        if let Ok(v) = HeaderValue::from_str(&header_safe(&v)) {
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
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let (parts, body) = req.into_parts();
    let body = body::read(body, state.opts.max_body_bytes, state.opts.body_timeout).await?;
    let (image, mask) = if is_multipart {
        let req = Request::from_parts(parts, Body::from(body));
        let mut mp = Multipart::from_request(req, &state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let (mut image, mut mask): (Option<Bytes>, Option<Bytes>) = (None, None);
        let bad = |e: axum::extract::multipart::MultipartError| ApiError::bad_request(e.body_text());
        while let Some(field) = mp.next_field().await.map_err(bad)? {
            let name = field.name().unwrap_or_default().to_string();
            let slot = match name.as_str() {
                "image" => &mut image,
                "mask" => &mut mask,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unknown part '{other}' (parts: image, mask)"
                    )))
                }
            };
            if slot.is_some() {
                return Err(ApiError::bad_request(format!("part '{name}' is given twice")));
            }
            *slot = Some(field.bytes().await.map_err(bad)?);
        }
        let image = image.ok_or_else(|| ApiError::bad_request("no 'image' part"))?;
        (image, mask)
    } else {
        (body, None)
    };
    if image.is_empty() {
        return Err(ApiError::bad_request("the body is empty: send an encoded image"));
    }
    restore_request(state, model, image, mask, query)
        .await
        .map(image_response)
}
