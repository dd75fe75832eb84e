//! The HTTP service: `POST /v1/predict` (raw image body or multipart), `GET /v1/model`,
//! `GET /healthz`, on axum over hyper's HTTP/1 connections. Every failure is a JSON error with a
//! 4xx/5xx status; the service keeps serving. Its defences: a bearer token on every route but
//! `/healthz`, a header timeout, a body timeout (408), a request deadline (504), a bounded queue
//! in front of the model (503 with `Retry-After`) and a cap on connections served at once.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Multipart, Query, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rekindle_model::preprocess::eval_transform;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::InferError;
use crate::app::App;
use crate::auth::Check;
use crate::batcher::{Admission, BatchError, Full, Preparing};
use crate::decode::decode;
use crate::limits::Counters;
use crate::oip::{self, OipError};

/// A JSON error response: `{"error": {"status": .., "kind": .., "message": ..}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    fn with_header(mut self, name: HeaderName, value: &'static str) -> Self {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    /// 503: the queue in front of the model is full; try again after `Retry-After` seconds.
    fn overloaded(app: &App, full: Full) -> Self {
        Counters::bump(&app.counters.shed);
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            full.to_string(),
        );
        e.headers.push((
            header::RETRY_AFTER,
            HeaderValue::from(app.service.retry_after_s),
        ));
        e
    }
}

impl From<InferError> for ApiError {
    fn from(e: InferError) -> Self {
        match e {
            InferError::TooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
            }
            InferError::BadImage { .. } => {
                Self::new(StatusCode::BAD_REQUEST, "bad_image", e.to_string())
            }
            other => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                other.to_string(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        tracing::warn!(status = self.status.as_u16(), kind = self.kind, error = %self.message, "request refused");
        let body = json!({"error": {"status": self.status.as_u16(), "kind": self.kind, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().extend(self.headers);
        response
    }
}

/// Query string of `POST /v1/predict`.
#[derive(Debug, Deserialize)]
pub struct PredictQuery {
    /// How many classes to return.
    pub top_k: Option<usize>,
}

/// The service's routes over `app`. The probes (`/healthz`, `/v2/health/*`) are open:
/// liveness and readiness checks carry no token. Every other route, unknown ones included,
/// wants the token when `app.token` is set, `/metrics` too (it tells who sends how much).
pub fn router(app: Arc<App>) -> Router {
    let body_limit = app.body_limit();
    Router::new()
        .route("/v1/predict", post(predict))
        .route("/v1/model", get(model))
        .route("/metrics", get(metrics))
        .merge(oip::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Routes added after this layer are outside it.
        .layer(middleware::from_fn_with_state(app.clone(), authenticate))
        .route(
            "/healthz",
            get(|| async { Json(json!({"status": "ok"})) }).fallback(method_not_allowed),
        )
        .merge(oip::probes())
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(app.clone(), track))
        .with_state(app)
}

/// Counts and times every answer by the route it matched (`unmatched` for none).
async fn track(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    let response = next.run(req).await;
    let seconds = started.elapsed().as_secs_f64();
    app.metrics
        .observe(&route, response.status().as_u16(), seconds);
    response
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        app.metrics.render(app.batcher.queue_depth()),
    )
        .into_response()
}

/// 404: the protocol's error on `/v2`, ours elsewhere.
async fn not_found(uri: Uri) -> Response {
    if uri.path().starts_with("/v2") {
        return OipError::new(StatusCode::NOT_FOUND, format!("no route {}", uri.path()))
            .into_response();
    }
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; try POST /v1/predict, GET /v1/model, GET /healthz, GET /metrics or \
         the Open Inference Protocol under /v2",
    )
    .into_response()
}

/// 405 as a JSON error, like every other refusal.
async fn method_not_allowed(uri: Uri) -> Response {
    if uri.path().starts_with("/v2") {
        return OipError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed").into_response();
    }
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed; try POST /v1/predict, GET /v1/model, GET /healthz",
    )
    .into_response()
}

/// 401 unless the request carries the app's token (when it has one).
async fn authenticate(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(token) = &app.token else {
        return next.run(req).await;
    };
    let presented = req.headers().get(header::AUTHORIZATION);
    let v2 = req.uri().path().starts_with("/v2");
    let (message, challenge) = match token.admits(presented.map(|v| v.as_bytes())) {
        Check::Ok => return next.run(req).await,
        Check::Missing => (
            "this service wants `Authorization: Bearer TOKEN`",
            "Bearer realm=\"rekindle\"",
        ),
        Check::Wrong => (
            "the bearer token is not the service's",
            "Bearer realm=\"rekindle\", error=\"invalid_token\"",
        ),
    };
    Counters::bump(&app.counters.unauthorized);
    let mut response = if v2 {
        OipError::new(StatusCode::UNAUTHORIZED, message).into_response()
    } else {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response()
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// Serves `app` on `listener` until `shutdown` resolves, then finishes the requests in flight
/// (for at most the body and request timeouts). At most `app.service.max_connections` are
/// served at once: the next connection stays in the listen backlog, unaccepted, until one
/// closes. Headers must arrive within `app.service.header_timeout`.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let routes = router(app.clone());
    let mut http = hyper::server::conn::http1::Builder::new();
    // half_close: a client that shuts down its side after sending (as `nc -N` does) still gets
    // its answer; hyper otherwise drops the connection when it reads EOF before answering,
    // which `cargo xtask fuzz` saw as requests left without a reply under load.
    http.timer(TokioTimer::new())
        .header_read_timeout(app.service.header_timeout)
        .half_close(true);
    let slots = Arc::new(Semaphore::new(app.service.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                Counters::bump(&app.counters.connection_waits);
                tracing::warn!(
                    max_connections = app.service.max_connections,
                    "connection cap reached: new connections wait until one closes"
                );
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before accept: not fatal.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small JSON answers: Nagle's algorithm would hold them back on keep-alive connections.
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(routes.clone()),
        );
        let conn = graceful.watch(conn);
        let app = app.clone();
        Counters::bump(&app.counters.connections_accepted);
        app.counters.connections_open.inc();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                if e.is_timeout() {
                    Counters::bump(&app.counters.header_timeouts);
                }
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            app.counters.connections_open.dec();
            drop(slot);
        });
    }
    drop(listener);
    let grace = app.service.body_timeout + app.service.request_timeout;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            seconds = grace.as_secs_f64(),
            "connections still open after the grace period; closing them"
        );
    }
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

async fn model(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    let s = app.batcher.stats();
    Json(json!({
        "metadata": app.metadata,
        "backend": app.backend,
        "batchnorm_folded": app.folded,
        "limits": {
            "max_bytes": app.limits.max_bytes,
            "max_pixels": app.limits.max_pixels,
            "max_side": app.limits.max_side,
        },
        "batching": {
            "max_batch": app.batcher.max_batch,
            "max_wait_ms": app.batcher.max_wait.as_secs_f64() * 1e3,
            "batches": s.batches.get(),
            "images": s.images.get(),
            "largest_batch": s.largest_batch.load(Ordering::Relaxed),
            "abandoned": s.abandoned.get(),
        },
        "service": service_json(&app),
    }))
}

/// The service limits, the queue and connections now, and the refusal counts.
fn service_json(app: &App) -> serde_json::Value {
    let mut v = app.service.to_json();
    let c = &app.counters;
    v["auth"] = json!(if app.token.is_some() {
        "bearer"
    } else {
        "none"
    });
    v["max_queue"] = json!(app.batcher.max_queue);
    v["queue_depth"] = json!(app.batcher.queue_depth());
    v["connections_open"] = json!(c.connections_open.get());
    v["connections_accepted"] = json!(c.connections_accepted.get());
    v["refused"] = c.to_json();
    v
}

/// How a request's body carries the image.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Raw,
    Multipart,
}

/// The body kind from the `Content-Type`, or 415.
fn body_kind(req: &Request) -> Result<BodyKind, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        return Ok(BodyKind::Multipart);
    }
    if content_type.is_empty()
        || content_type.starts_with("image/")
        || content_type.starts_with("application/octet-stream")
    {
        return Ok(BodyKind::Raw);
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "content type `{content_type}` is not an image; send the image body as \
             image/png, image/jpeg or application/octet-stream, or as multipart/form-data"
        ),
    ))
}

/// The image bytes of a request: the raw body, or the first file part of a multipart form.
async fn image_bytes(app: &Arc<App>, req: Request, kind: BodyKind) -> Result<Bytes, ApiError> {
    let too_large = |status: StatusCode, text: String| {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "too_large",
                format!(
                    "request body is over the limit of {} bytes",
                    app.limits.max_bytes
                ),
            )
        } else {
            // axum answers a multipart body that ends early or breaks its framing with 500
            // ("failed to read stream"): the client's fault, and found by `cargo xtask fuzz`.
            let status = if status.is_server_error() {
                StatusCode::BAD_REQUEST
            } else {
                status
            };
            ApiError::new(status, "bad_request", text)
        }
    };
    if kind == BodyKind::Multipart {
        let mut form = Multipart::from_request(req, app)
            .await
            .map_err(|e| too_large(e.status(), e.body_text()))?;
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| too_large(e.status(), e.body_text()))?
        {
            if field.file_name().is_some() || field.name() == Some("image") {
                return field
                    .bytes()
                    .await
                    .map_err(|e| too_large(e.status(), e.body_text()));
            }
        }
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the multipart form has no file part (send the image as a file, or a part named `image`)",
        ));
    }
    Bytes::from_request(req, app)
        .await
        .map_err(|e| too_large(e.status(), e.body_text()))
}

/// The body within the body timeout: 408 (and the connection closed) when it stalls.
async fn read_body(app: &Arc<App>, req: Request, kind: BodyKind) -> Result<Bytes, ApiError> {
    let timeout = app.service.body_timeout;
    match tokio::time::timeout(timeout, image_bytes(app, req, kind)).await {
        Ok(bytes) => bytes,
        Err(_) => {
            Counters::bump(&app.counters.body_timeouts);
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {} ms",
                    timeout.as_millis()
                ),
            )
            .with_header(header::CONNECTION, "close"))
        }
    }
}

/// Decodes `bytes` off the async threads and has the model predict them. `place` travels with
/// the work, so it stays taken until the work ends even if the caller stops waiting.
async fn infer(
    app: &Arc<App>,
    bytes: Bytes,
    top_k: usize,
    guard: Preparing,
    place: Admission,
) -> Result<crate::batcher::Batched, ApiError> {
    let (limits, pre) = (app.limits, app.metadata.preprocess.clone());
    let (pixels, place) = tokio::task::spawn_blocking(move || {
        let pixels = decode(&bytes, "request body", &limits).map(|img| eval_transform(&img, &pre));
        (pixels, place)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    app.batcher
        .predict(pixels?, top_k, guard, place)
        .await
        .map_err(|e| match e {
            BatchError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                e.to_string(),
            ),
            BatchError::Failed(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        })
}

async fn predict(
    State(app): State<Arc<App>>,
    query: Result<Query<PredictQuery>, QueryRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let Query(query) =
        query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let classes = app.metadata.class_names.len();
    let top_k = query.top_k.unwrap_or(app.default_top_k.min(classes));
    if top_k == 0 || top_k > classes {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("top_k must be between 1 and {classes} (the model's classes), got {top_k}"),
        ));
    }
    let kind = body_kind(&req)?;
    // The body is read even when the queue is full: a client that writes all of it before
    // reading (most do) would otherwise meet a reset connection instead of the 503.
    let bytes = read_body(&app, req, kind).await?;
    let size = bytes.len();
    let place = app
        .batcher
        .admit()
        .map_err(|full| ApiError::overloaded(&app, full))?;
    let guard = app.batcher.preparing();
    let deadline = app.service.request_timeout;
    let out = tokio::time::timeout(deadline, infer(&app, bytes, top_k, guard, place))
        .await
        .map_err(|_| {
            Counters::bump(&app.counters.deadline_exceeded);
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "deadline_exceeded",
                format!(
                    "no answer within the request timeout of {} ms (decoding, queueing, inference)",
                    deadline.as_millis()
                ),
            )
        })??;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let best = out.prediction.best();
    tracing::info!(bytes = size, batch = out.batch, ms = format!("{ms:.1}"), class = %best.class, p = best.probability, "predicted");
    Ok(Json(json!({
        "predictions": out.prediction.top,
        "batch": out.batch,
        "ms": ms,
    }))
    .into_response())
}
