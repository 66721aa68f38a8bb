//! Running a restore without holding the GIL: the work runs on a thread of its own while the calling thread
//! waits outside the GIL, looking at Python's signals every 50 ms, so other Python threads keep running and
//! Ctrl-C (KeyboardInterrupt) stops the restore at its next check (between tiles). A `progress` callable
//! gets (tiles_done, tiles_total) after each tile; an exception it raises cancels the restore and is raised
//! to the caller.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use diffir::{Control, Progress};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::errors;

/// How often the waiting thread looks at Python's signals.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// Run `work` with a control that carries the cancellation, the progress reports and this restore's own
/// initial noise (`noise`, where a seed was given); its error as the package's exception, or the exception
/// that cancelled it.
pub fn run<T: Send>(
    py: Python<'_>,
    progress: Option<&Bound<'_, PyAny>>,
    noise: Option<&[f32]>,
    work: impl FnOnce(&Control<'_>) -> diffir::Result<T> + Send,
) -> PyResult<T> {
    let cancel = AtomicBool::new(false);
    // The first exception that cancelled the restore: Ctrl-C's, or the progress callable's.
    let raised: Mutex<Option<PyErr>> = Mutex::new(None);
    let stop = |e: PyErr| {
        raised.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
        cancel.store(true, Ordering::SeqCst);
    };
    let callback = progress.map(|p| p.clone().unbind());
    let report = |p: Progress| {
        if let Some(cb) = &callback {
            Python::attach(|py| {
                if let Err(e) = cb.call1(py, (p.tiles_done, p.tiles_total)) {
                    stop(e);
                }
            });
        }
    };
    let finished = Finished::default();
    let outcome = std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            // Set when this closure ends, returning or unwinding.
            let _done = finished.on_drop();
            let control = Control {
                cancel: Some(&cancel),
                progress: Some(&report),
                noise,
                ..Control::default()
            };
            work(&control)
        });
        while !py.detach(|| finished.wait(SIGNAL_POLL)) {
            if let Err(e) = py.check_signals() {
                stop(e);
            }
        }
        // The worker is done: it calls into Python no more, so joining with the GIL is safe.
        worker.join()
    });
    let outcome = outcome.map_err(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        PyRuntimeError::new_err(format!("diffir: internal error (a panic): {why}"))
    })?;
    if let Some(e) = raised.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    outcome.map_err(errors::to_py)
}

/// Whether the worker has finished, and a way to wait for it.
#[derive(Default)]
struct Finished {
    done: Mutex<bool>,
    changed: Condvar,
}

/// Marks the work finished when dropped.
struct SetOnDrop<'a>(&'a Finished);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        *self.0.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.0.changed.notify_all();
    }
}

impl Finished {
    fn on_drop(&self) -> SetOnDrop<'_> {
        SetOnDrop(self)
    }

    /// Wait up to `timeout`; whether the work has finished.
    fn wait(&self, timeout: Duration) -> bool {
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        let (done, _) = self
            .changed
            .wait_timeout_while(done, timeout, |d| !*d)
            .unwrap_or_else(|p| p.into_inner());
        *done
    }
}
