//! The `diffir` Python package's native module (`diffir._diffir`): the runtime's pipeline for numpy arrays
//! and image files. The Python side (`python/diffir/`) adds the exception classes, finds the onnxruntime
//! wheel's library and re-exports what is here.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;

mod arrays;
mod errors;
mod options;
mod pipeline;
mod run;

/// The installed models (`$DIFFIR_MODELS_DIR`, else ~/.local/share/diffir/models), as `diffir models`
/// lists them: one dict per model with its name and path, and its task and scale, or why it does not load.
#[pyfunction]
fn models(py: Python<'_>) -> PyResult<Vec<Bound<'_, PyDict>>> {
    diffir::internal::models::installed()
        .into_iter()
        .map(|(name, path, bundle)| {
            let d = PyDict::new(py);
            d.set_item("name", name)?;
            d.set_item("path", path.to_string_lossy())?;
            match bundle {
                Ok(b) => {
                    d.set_item("task", b.task().to_string())?;
                    d.set_item("scale", b.scale())?;
                }
                Err(e) => d.set_item("error", e.to_string())?,
            }
            Ok(d)
        })
        .collect()
}

/// Use the onnxruntime library at `path` (unless `ORT_DYLIB_PATH` names another); the package calls this on
/// import with the onnxruntime wheel's own library.
#[pyfunction]
fn _set_onnxruntime_library(path: PathBuf) -> PyResult<()> {
    diffir::set_onnxruntime_library(&path).map_err(errors::to_py)
}

#[pymodule]
fn _diffir(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<pipeline::Pipeline>()?;
    m.add_function(wrap_pyfunction!(models, m)?)?;
    m.add_function(wrap_pyfunction!(_set_onnxruntime_library, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "ONNXRUNTIME_VERSION",
        diffir::internal::backend::ort_library::ORT_VERSION,
    )?;
    Ok(())
}
