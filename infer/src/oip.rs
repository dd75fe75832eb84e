//! The Open Inference Protocol (KServe v2, what Triton, KServe, Seldon/MLServer and their
//! clients speak) over HTTP, beside `/v1`: server and model metadata, liveness and readiness,
//! and `POST /v2/models/{name}/infer` with either an FP32 tensor `input` `[N, 3, crop, crop]`
//! already preprocessed or a BYTES tensor `image` `[N]` of encoded images. The answer holds
//! `logits` and `probabilities` (FP32 `[N, classes]`) and `classes` (BYTES `[N, k]`, the top-k
//! class names), or the outputs the request names. Two extensions of Triton's are spoken, as
//! its clients use them by default: binary tensor data (`Inference-Header-Content-Length`) and
//! classification (an output's `classification: k` parameter, answered as `score:index:label`).
//! Errors are the protocol's `{"error": "..."}`. Every image goes through the same admission,
//! deadline and batching as a `/v1` request; [`crate::server`] puts the routes behind the same
//! token, body limit and timeouts.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rekindle_model::preprocess::eval_transform;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::app::App;
use crate::batcher::{BatchError, Batched};
use crate::classifier::top_indices;
use crate::decode::decode;
use crate::limits::Counters;

/// The version every model here answers to: a service serves one model file.
pub const MODEL_VERSION: &str = "1";

/// The header that splits a binary request or response into its JSON and its tensor bytes.
const HEADER_LENGTH: &str = "inference-header-content-length";

/// Outputs a model answers with, in the order they are returned when none are named.
const OUTPUTS: [&str; 3] = ["logits", "probabilities", "classes"];

/// A protocol error: `{"error": message}` with its status.
#[derive(Debug)]
pub struct OipError {
    status: StatusCode,
    message: String,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl OipError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for OipError {
    fn into_response(self) -> Response {
        tracing::warn!(status = self.status.as_u16(), error = %self.message, "request refused");
        let mut r = (self.status, Json(json!({"error": self.message}))).into_response();
        r.headers_mut().extend(self.headers);
        r
    }
}

/// The routes that want the token: metadata, readiness of a model, inference.
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/models/{name}", get(model_metadata))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(model_metadata_version),
        )
        .route("/v2/models/{name}/ready", get(model_ready))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready_version),
        )
        .route("/v2/models/{name}/infer", post(infer))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(infer_version),
        )
}

/// The probes, open like `/healthz`: orchestrators' liveness and readiness checks carry no token.
pub fn probes() -> Router<Arc<App>> {
    let ok = || async { StatusCode::OK };
    Router::new()
        .route("/v2/health/live", get(ok))
        .route("/v2/health/ready", get(ok))
}

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "rekindle",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "classification"],
    }))
}

/// The model named in a path, or 404 naming the one served.
fn served(app: &App, name: &str, version: Option<&str>) -> Result<(), OipError> {
    if name != app.model_name {
        return Err(OipError::new(
            StatusCode::NOT_FOUND,
            format!(
                "unknown model `{name}`: this service serves `{}`",
                app.model_name
            ),
        ));
    }
    match version {
        Some(v) if v != MODEL_VERSION => Err(OipError::new(
            StatusCode::NOT_FOUND,
            format!("model `{name}` has no version `{v}`; its one version is `{MODEL_VERSION}`"),
        )),
        _ => Ok(()),
    }
}

fn metadata_json(app: &App) -> Value {
    let (crop, classes) = (app.metadata.preprocess.crop, app.metadata.class_names.len());
    json!({
        "name": app.model_name,
        "versions": [MODEL_VERSION],
        "platform": format!("rekindle_{}", app.backend),
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [-1, 3, crop, crop]},
            {"name": "image", "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": [-1, classes]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
            {"name": "classes", "datatype": "BYTES", "shape": [-1, -1]},
        ],
        "parameters": {
            "arch": app.metadata.arch().to_string(),
            "class_names": app.metadata.class_names,
            "preprocess": app.metadata.preprocess.clone(),
            "top_k": app.default_top_k,
        },
    })
}

async fn model_metadata(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, OipError> {
    served(&app, &name, None)?;
    Ok(Json(metadata_json(&app)))
}

async fn model_metadata_version(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, OipError> {
    served(&app, &name, Some(&version))?;
    Ok(Json(metadata_json(&app)))
}

async fn model_ready(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<StatusCode, OipError> {
    served(&app, &name, None).map(|()| StatusCode::OK)
}

async fn model_ready_version(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<StatusCode, OipError> {
    served(&app, &name, Some(&version)).map(|()| StatusCode::OK)
}

/// One input tensor of a request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Map<String, Value>,
    data: Option<Value>,
}

/// One output a request asks for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Requested {
    name: String,
    #[serde(default)]
    parameters: Map<String, Value>,
}

/// An inference request's JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InferRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Map<String, Value>,
    inputs: Vec<Input>,
    #[serde(default)]
    outputs: Option<Vec<Requested>>,
}

async fn infer(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, OipError> {
    served(&app, &name, None)?;
    run(app, req).await
}

async fn infer_version(
    State(app): State<Arc<App>>,
    Path((name, version)): Path<(String, String)>,
    req: Request,
) -> Result<Response, OipError> {
    served(&app, &name, Some(&version))?;
    run(app, req).await
}

/// Reads, checks and runs one inference request within the service's limits.
async fn run(app: Arc<App>, req: Request) -> Result<Response, OipError> {
    let started = Instant::now();
    let json_length = json_length(req.headers())?;
    let body = read_body(&app, req).await?;
    let (head, mut binary) = match json_length {
        Some(n) if n <= body.len() => (body.slice(..n), body.slice(n..)),
        Some(n) => {
            return Err(OipError::bad(format!(
                "{HEADER_LENGTH} is {n}, but the body has only {} bytes",
                body.len()
            )));
        }
        None => (body.clone(), Bytes::new()),
    };
    let request: InferRequest = serde_json::from_slice(&head)
        .map_err(|e| OipError::bad(format!("the request is not an inference request: {e}")))?;
    let images = read_input(&app, &request, &mut binary)?;
    if !binary.is_empty() {
        return Err(OipError::bad(format!(
            "{} bytes of binary data after the inputs' (binary_data_size adds up to less than \
             the body)",
            binary.len()
        )));
    }
    let outputs = Answer::plan(&app, &request)?;
    let deadline = app.service.request_timeout;
    let rows = tokio::time::timeout(deadline, predict_all(&app, images))
        .await
        .map_err(|_| {
            Counters::bump(&app.counters.deadline_exceeded);
            OipError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "no answer within the request timeout of {} ms",
                    deadline.as_millis()
                ),
            )
        })??;
    tracing::info!(
        images = rows.len(),
        ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
        "inferred (v2)"
    );
    Ok(outputs.respond(&app, request.id, &rows))
}

/// The length of the JSON part of a binary request, from its header.
fn json_length(headers: &HeaderMap) -> Result<Option<usize>, OipError> {
    let Some(v) = headers.get(HEADER_LENGTH) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .map(Some)
        .ok_or_else(|| OipError::bad(format!("{HEADER_LENGTH} must be a byte count")))
}

/// The whole body within the body timeout and the size limit.
async fn read_body(app: &Arc<App>, req: Request) -> Result<Bytes, OipError> {
    let timeout = app.service.body_timeout;
    match tokio::time::timeout(timeout, Bytes::from_request(req, app)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(OipError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is over the limit of {} bytes",
                app.body_limit()
            ),
        )),
        Ok(Err(e)) => Err(OipError::bad(e.body_text())),
        Err(_) => {
            Counters::bump(&app.counters.body_timeouts);
            // The rest of the body may still come: the connection cannot carry another request.
            Err(OipError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} ms",
                    timeout.as_millis()
                ),
            )
            .with_header(header::CONNECTION, HeaderValue::from_static("close")))
        }
    }
}

/// What a request's input holds: preprocessed images, or encoded ones still to decode.
enum Images {
    Pixels(Vec<Vec<f32>>),
    Encoded(Vec<Bytes>),
}

impl Images {
    fn len(&self) -> usize {
        match self {
            Images::Pixels(p) => p.len(),
            Images::Encoded(e) => e.len(),
        }
    }
}

/// The request's one input, checked against the model's, with its data.
fn read_input(app: &App, request: &InferRequest, binary: &mut Bytes) -> Result<Images, OipError> {
    let [input] = request.inputs.as_slice() else {
        return Err(OipError::bad(format!(
            "{} inputs: send one, `input` (FP32 [N, 3, H, W], preprocessed) or `image` (BYTES \
             [N], encoded images)",
            request.inputs.len()
        )));
    };
    let crop = app.metadata.preprocess.crop as i64;
    let data = binary_part(input, binary)?;
    match (input.name.as_str(), input.datatype.as_str()) {
        ("input", "FP32") => {
            let [n, 3, h, w] = input.shape[..] else {
                return Err(shape_error(input, &format!("[N, 3, {crop}, {crop}]")));
            };
            if n < 1 || h != crop || w != crop {
                return Err(shape_error(input, &format!("[N, 3, {crop}, {crop}]")));
            }
            let n = check_batch(app, n)?;
            let values = match data {
                Some(bytes) => f32s(&bytes, n * 3 * (crop * crop) as usize)?,
                None => json_f32s(input, n * 3 * (crop * crop) as usize)?,
            };
            let per = values.len() / n;
            Ok(Images::Pixels(
                values.chunks(per).map(<[f32]>::to_vec).collect(),
            ))
        }
        ("image", "BYTES") => {
            let n = match input.shape[..] {
                [n] | [n, 1] if n >= 1 => check_batch(app, n)?,
                _ => return Err(shape_error(input, "[N] (or [N, 1])")),
            };
            let items = match data {
                Some(bytes) => byte_items(&bytes)?,
                None => json_strings(input)?,
            };
            if items.len() != n {
                return Err(OipError::bad(format!(
                    "input `image` has shape {:?} but {} elements",
                    input.shape,
                    items.len()
                )));
            }
            Ok(Images::Encoded(items))
        }
        ("input" | "image", datatype) => Err(OipError::bad(format!(
            "input `{}` has datatype {datatype}; it takes {}",
            input.name,
            if input.name == "input" {
                "FP32"
            } else {
                "BYTES"
            }
        ))),
        (name, _) => Err(OipError::bad(format!(
            "unknown input `{name}`: the model takes `input` (FP32 [N, 3, {crop}, {crop}]) or \
             `image` (BYTES [N])"
        ))),
    }
}

fn shape_error(input: &Input, want: &str) -> OipError {
    OipError::bad(format!(
        "input `{}` has shape {:?}; the model takes {want}",
        input.name, input.shape
    ))
}

/// A batch size the queue can ever admit.
fn check_batch(app: &App, n: i64) -> Result<usize, OipError> {
    let max = app.batcher.max_queue;
    if n as usize > max {
        return Err(OipError::bad(format!(
            "a batch of {n} images is more than the service's queue holds ({max}); send at most \
             {max} per request"
        )));
    }
    Ok(n as usize)
}

/// The input's bytes from the binary part of the body, when it says it has some.
fn binary_part(input: &Input, binary: &mut Bytes) -> Result<Option<Bytes>, OipError> {
    let Some(size) = input.parameters.get("binary_data_size") else {
        return Ok(None);
    };
    let size = size
        .as_u64()
        .ok_or_else(|| OipError::bad("binary_data_size must be a byte count"))?
        as usize;
    if input.data.is_some() {
        return Err(OipError::bad(format!(
            "input `{}` has both JSON data and binary_data_size",
            input.name
        )));
    }
    if size > binary.len() {
        return Err(OipError::bad(format!(
            "input `{}` says {size} bytes of binary data, the body has {} after the JSON",
            input.name,
            binary.len()
        )));
    }
    Ok(Some(binary.split_to(size)))
}

/// Little-endian float32s, exactly `count` of them.
fn f32s(bytes: &[u8], count: usize) -> Result<Vec<f32>, OipError> {
    if bytes.len() != count * 4 {
        return Err(OipError::bad(format!(
            "{} bytes of FP32 data for {count} values ({} bytes)",
            bytes.len(),
            count * 4
        )));
    }
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    finite(values)
}

fn finite(values: Vec<f32>) -> Result<Vec<f32>, OipError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(OipError::bad(format!(
            "value {i} of the input is {}; the model takes finite numbers",
            values[i]
        ))),
        None => Ok(values),
    }
}

/// The JSON data of an FP32 input, flat or nested, exactly `count` numbers.
fn json_f32s(input: &Input, count: usize) -> Result<Vec<f32>, OipError> {
    let mut out = Vec::with_capacity(count);
    let data = input
        .data
        .as_ref()
        .ok_or_else(|| OipError::bad(format!("input `{}` has no data", input.name)))?;
    flatten(data, &mut |v| {
        v.as_f64()
            .map(|x| out.push(x as f32))
            .ok_or_else(|| OipError::bad(format!("input `{}`: {v} is not a number", input.name)))
    })?;
    if out.len() != count {
        return Err(OipError::bad(format!(
            "input `{}` has shape {:?} ({count} values) but {} values",
            input.name,
            input.shape,
            out.len()
        )));
    }
    finite(out)
}

/// The JSON data of a BYTES input: strings, taken as their UTF-8 bytes.
fn json_strings(input: &Input) -> Result<Vec<Bytes>, OipError> {
    let mut out = Vec::new();
    let data = input
        .data
        .as_ref()
        .ok_or_else(|| OipError::bad(format!("input `{}` has no data", input.name)))?;
    flatten(data, &mut |v| {
        v.as_str()
            .map(|s| out.push(Bytes::copy_from_slice(s.as_bytes())))
            .ok_or_else(|| {
                OipError::bad(format!(
                    "input `{}`: BYTES elements are strings in JSON (send encoded images as \
                     binary data)",
                    input.name
                ))
            })
    })?;
    Ok(out)
}

fn flatten(
    v: &Value,
    each: &mut dyn FnMut(&Value) -> Result<(), OipError>,
) -> Result<(), OipError> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|i| flatten(i, each)),
        other => each(other),
    }
}

/// BYTES elements in the binary form: each a little-endian u32 length, then that many bytes.
fn byte_items(bytes: &Bytes) -> Result<Vec<Bytes>, OipError> {
    let mut rest = bytes.clone();
    let mut items = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(OipError::bad("BYTES data ends inside an element's length"));
        }
        let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let _ = rest.split_to(4);
        if n > rest.len() {
            return Err(OipError::bad(format!(
                "a BYTES element says {n} bytes, {} are left",
                rest.len()
            )));
        }
        items.push(rest.split_to(n));
    }
    Ok(items)
}

/// Admits every image of the request (or none: 503), decodes the encoded ones off the async
/// threads, and has the model predict them, one row each, in order.
async fn predict_all(app: &Arc<App>, images: Images) -> Result<Vec<Batched>, OipError> {
    let n = images.len();
    let mut places = Vec::with_capacity(n);
    for _ in 0..n {
        let place = app.batcher.admit().map_err(|full| {
            Counters::bump(&app.counters.shed);
            OipError::new(StatusCode::SERVICE_UNAVAILABLE, full.to_string()).with_header(
                header::RETRY_AFTER,
                HeaderValue::from(app.service.retry_after_s),
            )
        })?;
        places.push(place);
    }
    let mut tasks = tokio::task::JoinSet::new();
    let items: Vec<Option<Vec<f32>>> = match &images {
        Images::Pixels(p) => p.iter().cloned().map(Some).collect(),
        Images::Encoded(e) => vec![None; e.len()],
    };
    for (i, (place, pixels)) in places.into_iter().zip(items).enumerate() {
        let guard = app.batcher.preparing();
        let app = app.clone();
        let encoded = match &images {
            Images::Encoded(e) => Some(e[i].clone()),
            Images::Pixels(_) => None,
        };
        tasks.spawn(async move {
            let pixels = match (pixels, encoded) {
                (Some(p), _) => p,
                (None, Some(bytes)) => decode_image(&app, bytes, i).await?,
                (None, None) => unreachable!("an image is either pixels or encoded"),
            };
            let k = app.metadata.class_names.len();
            app.batcher
                .predict(pixels, k, guard, place)
                .await
                .map(|b| (i, b))
                .map_err(|e| match e {
                    BatchError::Closed => {
                        OipError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                    }
                    BatchError::Failed(_) => {
                        OipError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                    }
                })
        });
    }
    let mut rows: Vec<Option<Batched>> = vec![None; n];
    while let Some(done) = tasks.join_next().await {
        let (i, b) =
            done.map_err(|e| OipError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
        rows[i] = Some(b);
    }
    Ok(rows.into_iter().flatten().collect())
}

/// One encoded image decoded within the limits and preprocessed as the model file says.
async fn decode_image(app: &Arc<App>, bytes: Bytes, i: usize) -> Result<Vec<f32>, OipError> {
    let (limits, pre) = (app.limits, app.metadata.preprocess.clone());
    let decoded = tokio::task::spawn_blocking(move || {
        decode(&bytes, &format!("image {i}"), &limits).map(|img| eval_transform(&img, &pre))
    })
    .await
    .map_err(|e| OipError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    decoded.map_err(|e| {
        let status = match e {
            crate::InferError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        OipError::new(status, e.to_string())
    })
}

/// One output to answer with, as asked.
struct Out {
    name: &'static str,
    /// Answer as `score:index:label` strings of the top k (Triton's classification).
    classification: Option<usize>,
    binary: bool,
}

/// The outputs to answer with and how.
struct Answer {
    outputs: Vec<Out>,
    top_k: usize,
}

impl Answer {
    /// Checks the outputs and parameters a request names (all outputs when it names none).
    fn plan(app: &App, request: &InferRequest) -> Result<Self, OipError> {
        let classes = app.metadata.class_names.len();
        let count = |v: &Value, what: &str| -> Result<usize, OipError> {
            match v.as_u64() {
                Some(k) if k >= 1 && k as usize <= classes => Ok(k as usize),
                _ => Err(OipError::bad(format!(
                    "{what} must be between 1 and {classes} (the model's classes), got {v}"
                ))),
            }
        };
        let top_k = match request.parameters.get("top_k") {
            Some(v) => count(v, "parameter top_k")?,
            None => app.default_top_k.min(classes),
        };
        let binary_all = request
            .parameters
            .get("binary_data_output")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let outputs = match &request.outputs {
            None => OUTPUTS
                .into_iter()
                .map(|name| Out {
                    name,
                    classification: None,
                    binary: binary_all,
                })
                .collect(),
            Some(asked) => asked
                .iter()
                .map(|o| {
                    let name = OUTPUTS.iter().find(|n| **n == o.name).ok_or_else(|| {
                        OipError::bad(format!(
                            "unknown output `{}`: the model answers {}",
                            o.name,
                            OUTPUTS.join(", ")
                        ))
                    })?;
                    let classification = match o.parameters.get("classification") {
                        Some(v) if *name != "classes" => {
                            Some(count(v, &format!("{}'s classification", o.name))?)
                        }
                        Some(_) => {
                            return Err(OipError::bad(
                                "`classes` is already the top-k names; ask classification of \
                                 `logits` or `probabilities`",
                            ));
                        }
                        None => None,
                    };
                    let binary = o
                        .parameters
                        .get("binary_data")
                        .and_then(Value::as_bool)
                        .unwrap_or(binary_all);
                    Ok(Out {
                        name,
                        classification,
                        binary,
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Self { outputs, top_k })
    }

    /// The response: JSON, or JSON then the binary outputs in order.
    fn respond(&self, app: &App, id: Option<String>, rows: &[Batched]) -> Response {
        let mut tail: Vec<u8> = Vec::new();
        let mut outputs = Vec::new();
        for o in &self.outputs {
            let (datatype, shape, payload) = self.tensor(o, app, rows);
            let mut out = json!({"name": o.name, "datatype": datatype, "shape": shape});
            if o.binary {
                let bytes = payload.to_bytes();
                out["parameters"] = json!({"binary_data_size": bytes.len()});
                tail.extend_from_slice(&bytes);
            } else {
                out["data"] = payload.to_json();
            }
            outputs.push(out);
        }
        let mut body = json!({
            "model_name": app.model_name,
            "model_version": MODEL_VERSION,
            "outputs": outputs,
            "parameters": {"batch_sizes": rows.iter().map(|r| r.batch).collect::<Vec<_>>()},
        });
        if let Some(id) = id {
            body["id"] = json!(id);
        }
        let head = body.to_string();
        if tail.is_empty() {
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                head,
            )
                .into_response();
        }
        let length = head.len();
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&tail);
        (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (
                    header::HeaderName::from_static(HEADER_LENGTH),
                    length.to_string(),
                ),
            ],
            bytes,
        )
            .into_response()
    }

    /// One output's datatype, shape and values.
    fn tensor(&self, o: &Out, app: &App, rows: &[Batched]) -> (&'static str, Vec<usize>, Payload) {
        let n = rows.len();
        let names = &app.metadata.class_names;
        let values = |r: &Batched| -> Vec<f32> {
            match o.name {
                "logits" => r.outputs.logits.clone(),
                _ => r.outputs.probabilities.clone(),
            }
        };
        if let Some(k) = o.classification {
            let strings = rows
                .iter()
                .flat_map(|r| {
                    let v = values(r);
                    top_indices(&v, k)
                        .into_iter()
                        .map(|i| format!("{:.6}:{i}:{}", v[i], names[i]))
                        .collect::<Vec<_>>()
                })
                .collect();
            return ("BYTES", vec![n, k], Payload::Strings(strings));
        }
        if o.name == "classes" {
            let strings = rows
                .iter()
                .flat_map(|r| {
                    top_indices(&r.outputs.probabilities, self.top_k)
                        .into_iter()
                        .map(|i| names[i].clone())
                        .collect::<Vec<_>>()
                })
                .collect();
            return ("BYTES", vec![n, self.top_k], Payload::Strings(strings));
        }
        let floats: Vec<f32> = rows.iter().flat_map(values).collect();
        ("FP32", vec![n, names.len()], Payload::Floats(floats))
    }
}

/// An output's values.
enum Payload {
    Floats(Vec<f32>),
    Strings(Vec<String>),
}

impl Payload {
    fn to_json(&self) -> Value {
        match self {
            Payload::Floats(v) => json!(v),
            Payload::Strings(v) => json!(v),
        }
    }

    /// The binary form: float32 little-endian, or each string as a u32 length then its bytes.
    fn to_bytes(&self) -> Vec<u8> {
        match self {
            Payload::Floats(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Payload::Strings(v) => v
                .iter()
                .flat_map(|s| {
                    (s.len() as u32)
                        .to_le_bytes()
                        .into_iter()
                        .chain(s.bytes())
                        .collect::<Vec<u8>>()
                })
                .collect(),
        }
    }
}
