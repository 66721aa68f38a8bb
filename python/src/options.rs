//! `Pipeline(...)`'s keywords as the runtime's `RestoreOptions`: the same names and defaults as the library
//! and the CLI, each value read by the parser the CLI's flag uses, so a value means the same everywhere.

use diffir::internal::plan::DeviceList;
use diffir::{BackendKind, Noise, Precision, RestoreOptions, TileRequest};
use pyo3::prelude::*;

use crate::errors;

/// The keywords of `Pipeline(...)` other than the model.
pub struct Keywords<'py> {
    pub backend: &'py str,
    pub device: Option<Bound<'py, PyAny>>,
    pub precision: &'py str,
    pub tile: String,
    pub tile_overlap: usize,
    pub tile_batch: Option<usize>,
    pub threads: Option<usize>,
    pub workers: Option<usize>,
    pub max_memory: Option<Bound<'py, PyAny>>,
    pub seed: u64,
}

/// `name`: `text` read by `parse`, its error as an `InputError` naming the keyword.
fn parsed<T>(name: &str, text: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> PyResult<T> {
    parse(text).map_err(|e| errors::input(format!("{name}: {e}")))
}

/// An int or a string keyword as the text the CLI's flag would get.
fn text(name: &str, value: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(n) = value.extract::<i64>() {
        return Ok(n.to_string());
    }
    value
        .extract::<String>()
        .map_err(|_| errors::input(format!("{name} must be an int or a str, not {}", type_name(value))))
}

/// The Python type name of `value`, for messages.
pub fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map_or_else(|_| "an object".into(), |n| n.to_string())
}

impl Keywords<'_> {
    pub fn options(&self) -> PyResult<RestoreOptions> {
        let backend: BackendKind = parsed("backend", self.backend, str::parse)?;
        let precision: Precision = parsed("precision", self.precision, str::parse)?;
        let tile: TileRequest = parsed("tile", &self.tile, str::parse)?;
        let devices = match &self.device {
            None => vec![],
            Some(d) => match d.extract::<Vec<i32>>() {
                Ok(list) => list,
                Err(_) => parsed("device", &text("device", d)?, |s| s.parse::<DeviceList>())?.0,
            },
        };
        let max_memory = match &self.max_memory {
            None => None,
            Some(m) => Some(parsed(
                "max_memory",
                &text("max_memory", m)?,
                diffir::internal::memory::parse_bytes,
            )?),
        };
        if self.tile_batch == Some(0) || self.tile_batch.is_some_and(|b| b > 256) {
            return Err(errors::input("tile_batch must lie in 1..=256"));
        }
        Ok(RestoreOptions {
            backend,
            devices,
            threads: self.threads.unwrap_or(0),
            workers: self.workers,
            precision,
            tile,
            tile_overlap: self.tile_overlap,
            tile_batch: self.tile_batch,
            max_memory,
            noise: Noise::Seed(self.seed),
            ..RestoreOptions::default()
        })
    }
}
