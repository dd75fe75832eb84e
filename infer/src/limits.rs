//! The service's defences against slow clients and overload: the limits it enforces (all CLI
//! flags, shown by `GET /v1/model`) and counters of what each refused.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use serde_json::{Value, json};

/// Timeouts and caps of the HTTP layer; the bounded queue in front of the model is the
/// batcher's ([`crate::batcher::Batcher::max_queue`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceLimits {
    /// Connections served at once; further ones wait in the listen backlog, unaccepted.
    pub max_connections: usize,
    /// Longest wait for a request's headers, counted from the first read of them (an idle
    /// keep-alive connection is closed after it too).
    pub header_timeout: Duration,
    /// Longest wait for a request's whole body once its headers are in (then 408).
    pub body_timeout: Duration,
    /// Longest time from a request's body read to its answer: decoding, queueing and the
    /// forward pass (then 504).
    pub request_timeout: Duration,
    /// Seconds a shed request is told to wait (`Retry-After`).
    pub retry_after_s: u64,
}

impl Default for ServiceLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            retry_after_s: 1,
        }
    }
}

impl ServiceLimits {
    /// The limits as `/v1/model` shows them, in milliseconds.
    pub fn to_json(&self) -> Value {
        let ms = |d: Duration| d.as_millis() as u64;
        json!({
            "max_connections": self.max_connections,
            "header_timeout_ms": ms(self.header_timeout),
            "body_timeout_ms": ms(self.body_timeout),
            "request_timeout_ms": ms(self.request_timeout),
            "retry_after_s": self.retry_after_s,
        })
    }
}

/// What the service refused, by reason, and the connections it holds; shared by the accept
/// loop and the handlers, and exported as they are by `GET /metrics` (Prometheus types, so
/// that one count serves both).
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests without the right bearer token (401).
    pub unauthorized: Counter,
    /// Requests shed because the queue in front of the model was full (503).
    pub shed: Counter,
    /// Requests whose body did not arrive within the body timeout (408).
    pub body_timeouts: Counter,
    /// Requests not answered within the request timeout (504).
    pub deadline_exceeded: Counter,
    /// Connections closed because headers did not arrive in time (or an idle keep-alive
    /// connection sent nothing more).
    pub header_timeouts: Counter,
    /// Times the accept loop stopped accepting because the connection cap was reached.
    pub connection_waits: Counter,
    /// Connections open now.
    pub connections_open: Gauge,
    /// Connections accepted so far.
    pub connections_accepted: Counter,
}

impl Counters {
    /// Adds one to `counter`.
    pub fn bump(counter: &Counter) {
        counter.inc();
    }

    /// The refusal counts as `/v1/model` shows them.
    pub fn to_json(&self) -> Value {
        let get = |c: &Counter| c.get();
        json!({
            "unauthorized": get(&self.unauthorized),
            "shed": get(&self.shed),
            "body_timeouts": get(&self.body_timeouts),
            "deadline_exceeded": get(&self.deadline_exceeded),
            "header_timeouts": get(&self.header_timeouts),
            "connection_waits": get(&self.connection_waits),
        })
    }
}
