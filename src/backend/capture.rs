//! CUDA graph captures and the device: onnxruntime's CUDA provider captures a graph during a session's first
//! runs, in CUDA's process-wide capture mode, so those runs must have the device alone; and a capture that
//! fails must not stop the batch.

use std::sync::Mutex;

use super::Tensor;
use crate::error::{Error, Result};

/// onnxruntime's CUDA provider captures a CUDA graph during a session's first runs, and CUDA captures in a
/// process-wide mode: another thread that allocates or copies on the device meanwhile breaks the capture
/// (onnxruntime documents CUDA graphs as single-threaded). So every run of a CUDA session takes this lock to
/// share it, and the runs of a session that may be capturing take it alone.
pub(crate) static DEVICE_CAPTURE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// [`DEVICE_CAPTURE`] held shared, for a run on a CUDA device that is not capturing.
pub(crate) fn device_shared() -> std::sync::RwLockReadGuard<'static, ()> {
    DEVICE_CAPTURE.read().unwrap_or_else(|e| e.into_inner())
}

/// How many runs of a CUDA-graph session hold [`DEVICE_CAPTURE`] alone: onnxruntime runs the session
/// normally at least once (allocating its memory), captures during the next run, and replays after that;
/// one more run is covered in case of a warm-up the provider adds.
pub(crate) const CAPTURE_RUNS: usize = 3;

/// The capture state of one CUDA-graph session.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    runs: usize,
}

impl Capture {
    /// Run `f` holding [`DEVICE_CAPTURE`] alone while the session may be capturing, shared after.
    pub(crate) fn run<T>(&mut self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let capturing = self.capturing();
        self.runs += 1;
        if capturing {
            let _alone = DEVICE_CAPTURE.write().unwrap_or_else(|e| e.into_inner());
            f()
        } else {
            let _shared = device_shared();
            f()
        }
    }

    /// Whether the next run may capture the graph.
    pub(crate) fn capturing(&self) -> bool {
        self.runs < CAPTURE_RUNS
    }
}

/// Run `runner`; where a CUDA graph capture fails, replace it with `rebuild()` (the same session without a
/// graph), run that instead, and say so in a note. Out-of-memory errors are passed on (the pipeline
/// shrinks its tiles); so are failures of a graph already captured.
pub(crate) fn run_with_capture_fallback<R>(
    runner: &mut R,
    capturing: impl Fn(&R) -> bool,
    run: impl Fn(&mut R) -> Result<Tensor>,
    rebuild: impl FnOnce() -> Result<R>,
    notes: &Mutex<Vec<String>>,
) -> Result<Tensor> {
    let was_capturing = capturing(runner);
    match run(runner) {
        Err(e) if was_capturing && !matches!(e, Error::OutOfMemory { .. }) => {
            *runner = rebuild()?;
            notes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("CUDA graph capture failed ({e}); running without a CUDA graph"));
            run(runner)
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::bundle::GraphKind;

    /// A runner whose CUDA graph capture fails (as a capture broken by another thread's allocation does).
    struct Fake {
        graph: bool,
        runs: usize,
    }

    fn ok() -> Tensor {
        Tensor {
            shape: vec![1],
            data: vec![1.0],
        }
    }

    fn run_fake(r: &mut Fake) -> Result<Tensor> {
        r.runs += 1;
        if r.graph {
            Err(Error::graph(
                GraphKind::Backbone,
                "CUDA failure 900: operation not permitted when stream is capturing",
            ))
        } else {
            Ok(ok())
        }
    }

    #[test]
    fn a_failed_capture_falls_back_to_the_session_without_a_graph() {
        let notes = Mutex::new(vec![]);
        let mut r = Fake { graph: true, runs: 0 };
        let capturing = |r: &Fake| r.graph && r.runs < CAPTURE_RUNS;
        let rebuilt = || Ok(Fake { graph: false, runs: 0 });
        let out = run_with_capture_fallback(&mut r, capturing, run_fake, rebuilt, &notes).unwrap();
        assert_eq!(out, ok());
        assert!(!r.graph, "the runner was replaced");
        let notes = notes.into_inner().unwrap();
        assert_eq!(notes.len(), 1);
        assert!(notes[0].starts_with("CUDA graph capture failed (") && notes[0].contains("without a CUDA graph"));
        // Running out of memory while capturing is passed on: the pipeline shrinks the batch.
        let notes = Mutex::new(vec![]);
        let mut r = Fake { graph: true, runs: 0 };
        let oom = |r: &mut Fake| -> Result<Tensor> {
            r.runs += 1;
            Err(Error::OutOfMemory {
                graph: GraphKind::Backbone,
                msg: "CUDA failure 2: out of memory".into(),
            })
        };
        let e = run_with_capture_fallback(&mut r, capturing, oom, rebuilt, &notes).unwrap_err();
        assert!(matches!(e, Error::OutOfMemory { .. }));
        assert!(r.graph && notes.lock().unwrap().is_empty());
        // A graph already captured that fails is an error, not a rebuild.
        let mut r = Fake {
            graph: true,
            runs: CAPTURE_RUNS,
        };
        assert!(run_with_capture_fallback(&mut r, capturing, run_fake, rebuilt, &notes).is_err());
        assert!(r.graph);
    }

    /// While a session may be capturing, no other run on the device starts; after its capture runs it
    /// shares the device.
    #[test]
    fn capture_runs_hold_the_device_alone() {
        let order = Mutex::new(vec![]);
        let mut capture = Capture::default();
        std::thread::scope(|s| {
            let (started, wait) = mpsc::channel();
            let order = &order;
            let capture = &mut capture;
            s.spawn(move || {
                capture
                    .run(|| {
                        started.send(()).unwrap();
                        std::thread::sleep(Duration::from_millis(200));
                        order.lock().unwrap().push("capture");
                        Ok(())
                    })
                    .unwrap();
            });
            wait.recv().unwrap();
            let _shared = DEVICE_CAPTURE.read().unwrap();
            order.lock().unwrap().push("other run");
        });
        assert_eq!(*order.lock().unwrap(), ["capture", "other run"]);
        // Past its capture runs, a session's runs share the device with others.
        for _ in 1..CAPTURE_RUNS {
            capture.run(|| Ok(())).unwrap();
        }
        assert!(!capture.capturing());
        let _other = DEVICE_CAPTURE.read().unwrap();
        capture.run(|| Ok(())).unwrap();
    }
}
