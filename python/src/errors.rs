//! The runtime's errors as the package's exception classes (defined in `diffir/_errors.py`), chosen by the
//! error's variant; the message is the error's own, as the CLI prints it after `error: `.

use diffir::Error;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyType;

/// The class of `diffir._errors` that stands for `e`.
pub fn class_name(e: &Error) -> &'static str {
    match e {
        Error::Bundle { .. } | Error::Graph { .. } => "ModelError",
        Error::Input { .. } | Error::Mask(_) | Error::TooLarge { .. } | Error::Shape(_) | Error::Usage(_) => {
            "InputError"
        }
        Error::OutOfMemory { .. } => "OutOfMemoryError",
        Error::Backend(_) | Error::Remote { .. } | Error::Listen { .. } => "BackendError",
        Error::Io { .. } | Error::Exists { .. } => "FileError",
        Error::Cancelled => "CancelledError",
        _ => "DiffirError",
    }
}

/// `e` as the package's exception.
pub fn to_py(e: Error) -> PyErr {
    Python::attach(|py| {
        let message = e.to_string();
        match py.import("diffir._errors").and_then(|m| m.getattr(class_name(&e))) {
            Ok(class) => match class.cast_into::<PyType>() {
                Ok(class) => PyErr::from_type(class, message),
                Err(_) => PyRuntimeError::new_err(message),
            },
            Err(_) => PyRuntimeError::new_err(message),
        }
    })
}

/// An argument the caller got wrong, as the package's `InputError` (also a `ValueError`).
pub fn input(msg: impl Into<String>) -> PyErr {
    to_py(Error::Usage(msg.into()))
}
