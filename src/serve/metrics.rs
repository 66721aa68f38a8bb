//! The server's Prometheus metrics: requests by model and status, latency, queue depth, requests in flight
//! and pixels processed, in the Prometheus text format at `/metrics`.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

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
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(queue_depth.clone()),
            Box::new(in_flight.clone()),
            Box::new(pixels.clone()),
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
