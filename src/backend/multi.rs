//! Several GPUs as one engine: each call goes to the device with the fewest calls in flight, so the
//! pipeline's parallel tiles (and concurrent images) spread over every device.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Engine, Input, Tensor};
use crate::bundle::GraphKind;
use crate::error::Result;

/// One engine per device behind the `Engine` trait. Results do not depend on which device ran a call:
/// every device runs the same graphs, and the pipeline assembles tiles in their own order.
pub struct MultiDevice {
    engines: Vec<Box<dyn Engine>>,
    in_flight: Vec<AtomicUsize>,
}

impl MultiDevice {
    /// Dispatch over these engines (one per device).
    pub fn new(engines: Vec<Box<dyn Engine>>) -> Self {
        assert!(!engines.is_empty(), "MultiDevice needs at least one engine");
        let in_flight = engines.iter().map(|_| AtomicUsize::new(0)).collect();
        MultiDevice { engines, in_flight }
    }

    /// How many devices.
    pub fn len(&self) -> usize {
        self.engines.len()
    }

    /// Always false: there is at least one device.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn on_least_busy<R>(&self, f: impl FnOnce(&dyn Engine) -> R) -> R {
        let i = (0..self.engines.len())
            .min_by_key(|&i| self.in_flight[i].load(Ordering::Relaxed))
            .unwrap_or(0);
        self.in_flight[i].fetch_add(1, Ordering::Relaxed);
        struct Done<'a>(&'a AtomicUsize);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let _done = Done(&self.in_flight[i]);
        f(self.engines[i].as_ref())
    }
}

impl Engine for MultiDevice {
    fn run(&self, graph: GraphKind, inputs: &[Input<'_>]) -> Result<Tensor> {
        self.on_least_busy(|e| e.run(graph, inputs))
    }

    fn run_fp32(&self, graph: GraphKind, inputs: &[Input<'_>]) -> Option<Result<Tensor>> {
        self.on_least_busy(|e| e.run_fp32(graph, inputs))
    }

    fn fixed_batch(&self, graph: GraphKind) -> Option<usize> {
        self.engines[0].fixed_batch(graph)
    }

    fn describe(&self) -> String {
        format!("{} on {} devices", self.engines[0].describe(), self.engines.len())
    }
}
