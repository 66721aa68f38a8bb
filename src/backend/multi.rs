//! Several GPUs as one engine: each call goes to the device with the fewest calls in flight, so the
//! pipeline's parallel tiles (and concurrent images) spread over every device.

use std::sync::Mutex;

use super::{Engine, Input, Tensor};
use crate::bundle::GraphKind;
use crate::error::Result;

/// One engine per device behind the `Engine` trait. Results do not depend on which device ran a call:
/// every device runs the same graphs, and the pipeline assembles tiles in their own order.
pub struct MultiDevice {
    engines: Vec<Box<dyn Engine>>,
    /// Calls in flight per device. Choosing a device and counting the call on it happen under this one lock,
    /// so two threads that choose at once never both take the same idle device.
    in_flight: Mutex<Vec<usize>>,
}

impl MultiDevice {
    /// Dispatch over these engines (one per device).
    pub fn new(engines: Vec<Box<dyn Engine>>) -> Self {
        assert!(!engines.is_empty(), "MultiDevice needs at least one engine");
        let in_flight = Mutex::new(vec![0; engines.len()]);
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

    /// Claim the device with the fewest calls in flight (the first of those tied), atomically.
    fn claim(&self) -> usize {
        let mut counts = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let i = (0..counts.len()).min_by_key(|&i| counts[i]).unwrap_or(0);
        counts[i] += 1;
        i
    }

    fn on_least_busy<R>(&self, f: impl FnOnce(&dyn Engine) -> R) -> R {
        struct Release<'a>(&'a Mutex<Vec<usize>>, usize);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.lock().unwrap_or_else(|e| e.into_inner())[self.1] -= 1;
            }
        }
        let i = self.claim();
        let _release = Release(&self.in_flight, i);
        f(self.engines[i].as_ref())
    }
}

impl Engine for MultiDevice {
    fn run(&self, graph: GraphKind, inputs: &[Input<'_>]) -> Result<Tensor> {
        self.on_least_busy(|e| e.run(graph, inputs))
    }
    fn cached_plans(&self) -> Option<usize> {
        self.engines.iter().map(|e| e.cached_plans()).sum()
    }
    fn run_until(
        &self,
        graph: GraphKind,
        inputs: &[Input<'_>],
        cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<Tensor> {
        self.on_least_busy(|e| e.run_until(graph, inputs, cancel))
    }

    fn run_fp32(&self, graph: GraphKind, inputs: &[Input<'_>]) -> Option<Result<Tensor>> {
        self.on_least_busy(|e| e.run_fp32(graph, inputs))
    }

    fn fixed_batch(&self, graph: GraphKind) -> Option<usize> {
        self.engines[0].fixed_batch(graph)
    }

    fn resize(&self, batch: usize, tile_shape: Option<(usize, usize)>) -> Result<()> {
        self.engines.iter().try_for_each(|e| e.resize(batch, tile_shape))
    }

    fn take_notes(&self) -> Vec<String> {
        self.engines.iter().flat_map(|e| e.take_notes()).collect()
    }

    fn describe(&self) -> String {
        format!("{} on {} devices", self.engines[0].describe(), self.engines.len())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    use super::*;

    /// A device that counts the calls it runs at once; every call waits at a barrier that all callers of a
    /// round reach, so the calls of one round are all in flight together.
    struct Fake {
        active: AtomicUsize,
        most: AtomicUsize,
        calls: AtomicUsize,
        barrier: Arc<Barrier>,
    }

    impl Engine for Fake {
        fn run(&self, _graph: GraphKind, _inputs: &[Input<'_>]) -> Result<Tensor> {
            let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.barrier.wait();
            self.active.fetch_sub(1, Ordering::SeqCst);
            Ok(Tensor {
                shape: vec![1],
                data: vec![0.0],
            })
        }
        fn describe(&self) -> String {
            "fake".into()
        }
    }

    /// The defect: choosing the least busy device and counting the call on it were two steps, so threads
    /// that chose at once could all take the same device while others stayed idle.
    #[test]
    fn callers_that_choose_at_once_get_distinct_devices() {
        const DEVICES: usize = 6;
        for round in 0..150 {
            let barrier = Arc::new(Barrier::new(DEVICES));
            let fakes: Vec<Arc<Fake>> = (0..DEVICES)
                .map(|_| {
                    Arc::new(Fake {
                        active: AtomicUsize::new(0),
                        most: AtomicUsize::new(0),
                        calls: AtomicUsize::new(0),
                        barrier: barrier.clone(),
                    })
                })
                .collect();
            struct Shared(Arc<Fake>);
            impl Engine for Shared {
                fn run(&self, graph: GraphKind, inputs: &[Input<'_>]) -> Result<Tensor> {
                    self.0.run(graph, inputs)
                }
                fn describe(&self) -> String {
                    self.0.describe()
                }
            }
            let multi = MultiDevice::new(
                fakes
                    .iter()
                    .map(|f| Box::new(Shared(f.clone())) as Box<dyn Engine>)
                    .collect(),
            );
            let start = Barrier::new(DEVICES);
            std::thread::scope(|s| {
                for _ in 0..DEVICES {
                    s.spawn(|| {
                        start.wait();
                        multi.run(GraphKind::Denoiser, &[]).unwrap();
                    });
                }
            });
            let calls: Vec<usize> = fakes.iter().map(|f| f.calls.load(Ordering::SeqCst)).collect();
            let most: Vec<usize> = fakes.iter().map(|f| f.most.load(Ordering::SeqCst)).collect();
            assert!(
                calls.iter().all(|&c| c == 1) && most.iter().all(|&m| m == 1),
                "round {round}: calls per device {calls:?}, most at once {most:?}"
            );
            assert_eq!(*multi.in_flight.lock().unwrap(), vec![0; DEVICES]);
        }
    }
}
