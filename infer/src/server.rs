//! The HTTP service: `POST /v1/predict` (raw image body or multipart), `GET /v1/model`,
//! `GET /healthz`, on axum. Every failure is a JSON error with a 4xx/5xx status; the service
//! keeps serving.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rekindle_model::ModelMetadata;
use rekindle_model::preprocess::eval_transform;
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;

use crate::InferError;
use crate::batcher::{BatchError, Batcher};
use crate::decode::{Limits, decode};

/// What the handlers share.
pub struct App {
    /// The model thread.
    pub batcher: Batcher,
    /// The model's metadata (class names, preprocessing).
    pub metadata: ModelMetadata,
    /// Input limits.
    pub limits: Limits,
    /// Backend name, for `/v1/model`.
    pub backend: String,
    /// Whether BatchNorm is folded, for `/v1/model`.
    pub folded: bool,
    /// Top-k when the request does not say.
    pub default_top_k: usize,
}

/// A JSON error response: `{"error": {"status": .., "kind": .., "message": ..}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
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
        (self.status, Json(body)).into_response()
    }
}

/// Query string of `POST /v1/predict`.
#[derive(Debug, Deserialize)]
pub struct PredictQuery {
    /// How many classes to return.
    pub top_k: Option<usize>,
}

/// The service's routes over `app`.
pub fn router(app: Arc<App>) -> Router {
    // Room for multipart framing around an image of the maximum size.
    let body_limit = app.limits.max_bytes + 64 * 1024;
    Router::new()
        .route("/v1/predict", post(predict))
        .route("/v1/model", get(model))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route; try POST /v1/predict, GET /v1/model, GET /healthz",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(app)
}

/// Serves `app` on `listener` until `shutdown` resolves, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
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
            "batches": s.batches.load(Ordering::Relaxed),
            "images": s.images.load(Ordering::Relaxed),
            "largest_batch": s.largest_batch.load(Ordering::Relaxed),
        },
    }))
}

/// The image bytes of a request: the raw body, or the first file part of a multipart form.
async fn image_bytes(app: &Arc<App>, req: Request) -> Result<Bytes, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
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
            ApiError::new(status, "bad_request", text)
        }
    };
    if content_type.starts_with("multipart/form-data") {
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
    let raw = content_type.is_empty()
        || content_type.starts_with("image/")
        || content_type.starts_with("application/octet-stream");
    if !raw {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "content type `{content_type}` is not an image; send the image body as \
                 image/png, image/jpeg or application/octet-stream, or as multipart/form-data"
            ),
        ));
    }
    Bytes::from_request(req, app)
        .await
        .map_err(|e| too_large(e.status(), e.body_text()))
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
    let guard = app.batcher.preparing();
    let bytes = image_bytes(&app, req).await?;
    let size = bytes.len();
    let (limits, pre) = (app.limits, app.metadata.preprocess.clone());
    // Decoding and resizing are CPU work: off the async threads, several at once.
    let pixels = tokio::task::spawn_blocking(move || {
        decode(&bytes, "request body", &limits).map(|img| eval_transform(&img, &pre))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    let out = app
        .batcher
        .predict(pixels, top_k, guard)
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
        })?;
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
