//! One error type for the library; every message names the file, graph, field or shape at fault.

use std::path::PathBuf;

/// Everything that can go wrong while loading a model or restoring an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// bundle.yaml is malformed or contradicts itself or its graphs.
    #[error("{path}: {msg}")]
    Bundle { path: PathBuf, msg: String },
    /// An ONNX graph could not be loaded or run.
    #[error("graph '{graph}': {msg}")]
    Graph { graph: String, msg: String },
    /// The requested backend cannot start (library missing, provider unavailable...).
    #[error("{0}")]
    Backend(String),
    /// An input image, mask or noise file is unusable.
    #[error("{path}: {msg}")]
    Input { path: PathBuf, msg: String },
    /// An input is over a configured limit (`--max-pixels`).
    #[error("{path}: {msg}")]
    TooLarge { path: PathBuf, msg: String },
    /// The work was cancelled (a server request past its deadline).
    #[error("cancelled")]
    Cancelled,
    /// A tensor or image has a shape the model cannot take.
    #[error("{0}")]
    Shape(String),
    /// A device ran out of memory running a graph (the pipeline retries with smaller batches and tiles).
    #[error("graph '{graph}': out of memory: {msg}")]
    OutOfMemory { graph: String, msg: String },
    /// A remote inference server failed one request: unreachable past its retries, past the deadline, or
    /// an error it answered. The image fails; a batch goes on with the next.
    #[error("Triton at {server}: model '{model}': {msg}")]
    Remote { server: String, model: String, msg: String },
    /// The output exists and --overwrite was not given.
    #[error("{path}: already exists (use --overwrite to replace it)")]
    Exists { path: PathBuf },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn bundle(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Bundle {
            path: path.into(),
            msg: msg.into(),
        }
    }

    pub(crate) fn graph(graph: impl Into<String>, msg: impl std::fmt::Display) -> Self {
        Error::Graph {
            graph: graph.into(),
            msg: msg.to_string(),
        }
    }

    pub(crate) fn input(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Input {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// A graph error, or an out-of-memory error where the message says the device ran out of memory.
    pub(crate) fn graph_or_oom(graph: &str, msg: String) -> Self {
        const MARKERS: [&str; 5] = [
            "out of memory",
            "Failed to allocate memory",
            "CUDNN_STATUS_ALLOC_FAILED",
            "cudaErrorMemoryAllocation",
            "CUBLAS_STATUS_ALLOC_FAILED",
        ];
        if MARKERS.iter().any(|m| msg.contains(m)) {
            Error::OutOfMemory {
                graph: graph.into(),
                msg,
            }
        } else {
            Error::graph(graph, msg)
        }
    }

    /// Errors about the model or the backend (exit code 2) rather than about one input (exit code 1).
    pub fn is_model_error(&self) -> bool {
        matches!(self, Error::Bundle { .. } | Error::Graph { .. } | Error::Backend(_))
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
