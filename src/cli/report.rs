//! What a batch did: written, skipped and failed inputs, and the line each failure prints.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// Outcome of a batch.
#[derive(Default)]
pub struct BatchReport {
    /// Outputs written.
    pub done: usize,
    /// Inputs skipped because their output exists (`--skip-existing`).
    pub skipped: usize,
    /// Inputs that failed, with why.
    pub failed: Vec<(PathBuf, String)>,
    /// Inputs not restored because Ctrl-C or SIGTERM stopped the run (Some: it was stopped).
    pub interrupted: Option<usize>,
}

impl BatchReport {
    /// The run's last line: images written, skipped and failed, the time, and where the outputs went.
    pub fn summary(&self, secs: f64, output: &Path) -> String {
        let output = crate::names::escaped(output);
        if let Some(left) = self.interrupted {
            return format!(
                "interrupted: {} done, {} failed, {left} not restored, in {secs:.1} s: {output}",
                self.done,
                self.failed.len()
            );
        }
        let skipped = if self.skipped > 0 {
            format!(", {} skipped (output exists)", self.skipped)
        } else {
            String::new()
        };
        if self.failed.is_empty() {
            format!("{} image(s) restored{skipped} in {secs:.1} s: {output}", self.done)
        } else {
            format!(
                "{} done{skipped}, {} failed, in {secs:.1} s: {output}",
                self.done,
                self.failed.len()
            )
        }
    }
}

/// "error: INPUT: why", naming the input once even where the error names a path itself.
pub(super) fn error_line(input: &Path, e: &Error) -> String {
    let msg = e.to_string();
    let path = crate::names::escaped(input);
    if msg.starts_with(&path) {
        format!("error: {msg}")
    } else {
        format!("error: {path}: {msg}")
    }
}
