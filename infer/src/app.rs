//! What the service's handlers share: the model thread, the model's metadata, the limits, the
//! token and the counters. Its own file so that the routes of both protocols ([`crate::server`]'s
//! `/v1` and [`crate::oip`]'s `/v2`) use it without importing each other.

use rekindle_model::ModelMetadata;

use crate::auth::Token;
use crate::batcher::Batcher;
use crate::decode::Limits;
use crate::limits::{Counters, ServiceLimits};
use crate::metrics::Metrics;

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
    /// The bearer token every route but `/healthz` wants; `None` serves without one.
    pub token: Option<Token>,
    /// Timeouts and the connection cap.
    pub service: ServiceLimits,
    /// What was refused, and the connections open.
    pub counters: Counters,
    /// The name `/v2/models/{name}` answers to.
    pub model_name: String,
    /// What `GET /metrics` reports.
    pub metrics: Metrics,
}

impl App {
    /// An app over `batcher` with no token, the default service limits and top-k 5.
    pub fn new(batcher: Batcher, metadata: ModelMetadata, limits: Limits) -> Self {
        let counters = Counters::default();
        let metrics = Metrics::new(&counters, batcher.stats());
        Self {
            batcher,
            metadata,
            limits,
            backend: String::new(),
            folded: false,
            default_top_k: 5,
            token: None,
            service: ServiceLimits::default(),
            counters,
            model_name: "model".into(),
            metrics,
        }
    }

    /// The largest request body: an image of the maximum size with room for multipart framing.
    pub fn body_limit(&self) -> usize {
        self.limits.max_bytes + 64 * 1024
    }
}
