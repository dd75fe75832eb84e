//! `GET /metrics`: what the service did, in the OpenMetrics text format that Prometheus
//! scrapes, written by the prometheus-client crate. Request counts and latencies by route and
//! status, images per forward pass, the queue, what was refused and why, connections, and how
//! long the model took to load. The refusal and batching counters are the very handles
//! `/v1/model` reads ([`Counters`], [`Stats`]), so both always agree.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

use crate::batcher::Stats;
use crate::limits::Counters;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A request's route (the pattern it matched, `/v2/models/{name}/infer`, or `unmatched`) and
/// its status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route pattern.
    pub route: String,
    /// The HTTP status answered.
    pub status: u16,
}

/// A route alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route pattern.
    pub route: String,
}

/// The registry and the metrics the HTTP layer updates itself.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    queue_depth: Gauge,
    model_load: Gauge<f64, AtomicU64>,
}

impl Metrics {
    /// Registers the service's metrics, sharing `counters`' and `stats`' handles.
    pub fn new(counters: &Counters, stats: &Stats) -> Self {
        let mut registry = Registry::with_prefix("rekindle");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        // 0.5 ms to 16 s.
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's headers to its answer, by route",
            Unit::Seconds,
            latency.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Requests admitted now (decoding, queued or in a forward pass)",
            queue_depth.clone(),
        );
        let model_load = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "model_load",
            "Time the model file took to load",
            Unit::Seconds,
            model_load.clone(),
        );
        register_batching(&mut registry, stats);
        register_refusals(&mut registry, counters);
        Self {
            registry,
            requests,
            latency,
            queue_depth,
            model_load,
        }
    }

    /// Records the model's load time.
    pub fn set_model_load_seconds(&self, seconds: f64) {
        self.model_load.set(seconds);
    }

    /// Records one answered request.
    pub fn observe(&self, route: &str, status: u16, seconds: f64) {
        let route = route.to_string();
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(seconds);
    }

    /// The text a scrape gets, with the queue depth as it is now.
    pub fn render(&self, queue_depth: usize) -> String {
        self.queue_depth.set(queue_depth as i64);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

fn register_batching(registry: &mut Registry, stats: &Stats) {
    registry.register("batches", "Forward passes run", stats.batches.clone());
    registry.register("images", "Images predicted", stats.images.clone());
    registry.register(
        "batch_size",
        "Images per forward pass",
        stats.batch_sizes.clone(),
    );
    registry.register(
        "abandoned",
        "Queued requests dropped unrun because their caller had given up",
        stats.abandoned.clone(),
    );
}

fn register_refusals(registry: &mut Registry, c: &Counters) {
    for (name, help, counter) in [
        (
            "unauthorized",
            "Requests without the right bearer token (401)",
            &c.unauthorized,
        ),
        (
            "shed",
            "Requests shed because the model's queue was full (503)",
            &c.shed,
        ),
        (
            "body_timeouts",
            "Request bodies that did not arrive in time (408)",
            &c.body_timeouts,
        ),
        (
            "deadline_exceeded",
            "Requests not answered within the request timeout (504)",
            &c.deadline_exceeded,
        ),
        (
            "header_timeouts",
            "Connections closed because headers did not arrive in time",
            &c.header_timeouts,
        ),
        (
            "connection_waits",
            "Times the connection cap held new connections back",
            &c.connection_waits,
        ),
        (
            "connections_accepted",
            "Connections accepted",
            &c.connections_accepted,
        ),
    ] {
        registry.register(name, help, counter.clone());
    }
    registry.register(
        "connections_open",
        "Connections open now",
        c.connections_open.clone(),
    );
}
