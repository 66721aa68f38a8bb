//! The server's Prometheus metrics: requests by model and status, latency, queue depth, requests in flight
//! and pixels processed, in the Prometheus text format at `/metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the server exports, in one registry.
pub struct Metrics {
    registry: Registry,
    /// Requests by model ("-" for none) and HTTP status code.
    pub requests: IntCounterVec,
    /// Seconds from arrival to response, restore requests, by model.
    pub latency: HistogramVec,
    /// Requests waiting for a worker.
    pub queue_depth: IntGauge,
    /// Restores running now.
    pub in_flight: IntGauge,
    /// Input pixels restored, by model.
    pub pixels: IntCounterVec,
    /// Connections open now.
    pub connections: IntGauge,
    /// Times the connection limit was reached (new clients then wait in the listen backlog).
    pub connection_limit_hits: IntCounter,
    /// Plans or sessions kept per input shape, by model (bounded: `--plan-cache`).
    pub cached_plans: IntGaugeVec,
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("diffir_requests_total", "HTTP requests by model and status code"),
            &["model", "code"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new("diffir_request_duration_seconds", "Restore request latency").buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
            ]),
            &["model"],
        )
        .expect("valid metric");
        let queue_depth =
            IntGauge::new("diffir_queue_depth", "Restore requests waiting for a worker").expect("valid metric");
        let in_flight = IntGauge::new("diffir_in_flight_requests", "Restores running").expect("valid metric");
        let pixels = IntCounterVec::new(
            Opts::new("diffir_pixels_processed_total", "Input pixels restored, by model"),
            &["model"],
        )
        .expect("valid metric");
        let connections = IntGauge::new("diffir_open_connections", "HTTP connections open").expect("valid metric");
        let connection_limit_hits = IntCounter::new(
            "diffir_connection_limit_reached_total",
            "Times --max-connections was reached",
        )
        .expect("valid metric");
        let cached_plans = IntGaugeVec::new(
            Opts::new("diffir_cached_plans", "Per-shape plans or sessions kept, by model"),
            &["model"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(queue_depth.clone()),
            Box::new(in_flight.clone()),
            Box::new(pixels.clone()),
            Box::new(connections.clone()),
            Box::new(connection_limit_hits.clone()),
            Box::new(cached_plans.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            latency,
            queue_depth,
            in_flight,
            pixels,
            connections,
            connection_limit_hits,
            cached_plans,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = vec![];
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding of gathered metrics");
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
