//! One error type for the library; every message names the file, graph, field or shape at fault.

use std::path::PathBuf;

use crate::graph_kind::GraphKind;
use crate::names::{escaped, escaped_text};

/// An underlying error (an engine's own), kept as the source.
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong while loading a model or restoring an image. New variants may be added.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", escaped(path))]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// bundle.yaml is malformed or contradicts itself or its graphs.
    #[error("{}: {}", escaped(path), escaped_text(msg))]
    Bundle {
        /// The bundle folder or file at fault.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// An ONNX graph could not be loaded or run.
    #[error("graph '{graph}': {msg}")]
    Graph {
        /// Which of the bundle's graphs.
        graph: GraphKind,
        /// What went wrong, in words.
        msg: String,
        /// The engine's own error, where there is one.
        #[source]
        source: Option<Source>,
    },
    /// The requested backend cannot start (library missing, provider unavailable...).
    #[error("{0}")]
    Backend(String),
    /// An input image, mask or noise file is unusable.
    #[error("{}: {}", escaped(path), escaped_text(msg))]
    Input {
        /// The input file (`<stdin>` for standard input, `(in memory)` for bytes).
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// A mask given where the task takes none, or missing where it needs one (inpainting).
    #[error("{0}")]
    Mask(String),
    /// An input is over a configured limit (`--max-pixels`).
    #[error("{}: {}", escaped(path), escaped_text(msg))]
    TooLarge {
        /// The input.
        path: PathBuf,
        /// Its size and the limit.
        msg: String,
    },
    /// The work was cancelled (a server request past its deadline).
    #[error("cancelled")]
    Cancelled,
    /// A tensor or image has a shape the model cannot take.
    #[error("{0}")]
    Shape(String),
    /// A device ran out of memory running a graph (the pipeline retries with smaller batches and tiles).
    #[error("graph '{graph}': out of memory: {msg}")]
    OutOfMemory {
        /// The graph that ran out of memory.
        graph: GraphKind,
        /// The device's message.
        msg: String,
    },
    /// A remote inference server failed one request: unreachable past its retries, past the deadline, or
    /// an error it answered. The image fails; a batch goes on with the next.
    #[error("Triton at {server}: model '{model}': {msg}")]
    Remote {
        /// The server's address.
        server: String,
        /// The model on the server.
        model: String,
        /// What happened.
        msg: String,
    },
    /// Options that cannot be used together, or with this model or backend: nothing was run. Not a model
    /// error (a batch never gets this far).
    #[error("{0}")]
    Usage(String),
    /// The server could not listen on its address (or start the runtime that listens).
    #[error("{what}: {source}")]
    Listen {
        /// What could not be done, with the address.
        what: String,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// An external program (ffmpeg, ffprobe) is missing or failed: its name and what it said.
    #[error("{program}: {}", escaped_text(msg))]
    Tool {
        /// The program.
        program: String,
        /// What happened (how to install it, or its last error line).
        msg: String,
    },
    /// The output exists and --overwrite was not given.
    #[error("{}: already exists (use --overwrite to replace it)", escaped(path))]
    Exists {
        /// The output file.
        path: PathBuf,
    },
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

    pub(crate) fn graph(graph: GraphKind, msg: impl std::fmt::Display) -> Self {
        Error::Graph {
            graph,
            msg: msg.to_string(),
            source: None,
        }
    }

    pub(crate) fn input(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Input {
            path: path.into(),
            msg: msg.into(),
        }
    }

    /// A graph error, or an out-of-memory error where the message says the device ran out of memory.
    pub(crate) fn graph_or_oom(graph: GraphKind, msg: String) -> Self {
        if is_out_of_memory(&msg) {
            Error::OutOfMemory { graph, msg }
        } else {
            Error::graph(graph, msg)
        }
    }

    /// Errors about the model or the backend, which stop a batch (exit code 2), rather than about one input
    /// (exit code 1, the batch goes on). Usage and listening errors come before any input: not model errors.
    pub fn is_model_error(&self) -> bool {
        matches!(self, Error::Bundle { .. } | Error::Graph { .. } | Error::Backend(_))
    }
}

/// What onnxruntime, CUDA, cuDNN and cuBLAS say when a device or host allocation fails, as they word it
/// (matched without regard to case).
const OUT_OF_MEMORY_MARKERS: [&str; 9] = [
    // CUDA's cudaErrorMemoryAllocation, as cudaGetErrorString words it ("CUDA failure 2: out of memory").
    "out of memory",
    "cudaErrorMemoryAllocation",
    // onnxruntime's allocators (BFC arena, CPU allocator).
    "Failed to allocate memory",
    // The CUDA arena with gpu_mem_limit: "Available memory of X is smaller than requested bytes of Y".
    "is smaller than requested bytes of",
    // cuDNN 8 and cuDNN 9.
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED",
    "CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED",
    // cuBLAS and cuFFT.
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUFFT_ALLOC_FAILED",
];

/// Whether an engine's message says that memory ran out (the pipeline then retries smaller).
pub(crate) fn is_out_of_memory(msg: &str) -> bool {
    let lower = msg.to_ascii_lowercase();
    OUT_OF_MEMORY_MARKERS
        .iter()
        .any(|m| lower.contains(&m.to_ascii_lowercase()))
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Real messages, as onnxruntime 1.31's CUDA provider, its arena and cuDNN 9 word them.
    #[test]
    fn out_of_memory_messages_are_recognised() {
        let oom = [
            "onnxruntime: Non-zero status code returned while running Conv node. Name:'/G/conv' Status Message: \
             CUDNN failure 5003: CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED ; GPU=0 ; hostname=h ; \
             file=conv.cc ; line=412 ; expr=cudnnFindConvolutionForwardAlgorithmEx(...)",
            "CUDNN failure 5002: CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED ; GPU=0",
            "onnxruntime: /onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:359 void* \
             onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, onnxruntime::Stream*, bool, \
             onnxruntime::WaitNotificationFn) Available memory of 1073741824 is smaller than requested bytes of \
             2147483648",
            "CUDA failure 2: out of memory ; GPU=0 ; hostname=h ; file=cuda_allocator.cc ; line=48 ; \
             expr=cudaMalloc((void**)&p, size);",
            "CUDA error cudaErrorMemoryAllocation:out of memory",
            "Failed to allocate memory for requested buffer of size 8589934592",
            "CUBLAS failure 3: CUBLAS_STATUS_ALLOC_FAILED",
            "CUDNN failure 2: CUDNN_STATUS_ALLOC_FAILED",
            "CUDA error: Out Of Memory",
        ];
        for msg in oom {
            assert!(is_out_of_memory(msg), "not recognised: {msg}");
            assert!(matches!(
                Error::graph_or_oom(GraphKind::Backbone, msg.into()),
                Error::OutOfMemory { .. }
            ));
        }
        let other = [
            "CUDNN failure 3000: CUDNN_STATUS_NOT_SUPPORTED",
            "CUDA failure 700: an illegal memory access was encountered",
            "Invalid input name: image",
        ];
        for msg in other {
            assert!(!is_out_of_memory(msg), "wrongly taken for out of memory: {msg}");
            assert!(matches!(
                Error::graph_or_oom(GraphKind::Backbone, msg.into()),
                Error::Graph { .. }
            ));
        }
    }

    /// What stops a batch is decided by the variant: model and backend errors do; usage and listening
    /// errors are not model errors, and neither is one input's.
    #[test]
    fn model_errors_are_the_model_and_backend_variants() {
        assert!(Error::bundle("b", "bad").is_model_error());
        assert!(Error::graph(GraphKind::Cpen, "bad").is_model_error());
        assert!(Error::Backend("no provider".into()).is_model_error());
        assert!(!Error::Usage("--tile-batch 0".into()).is_model_error());
        let listen = Error::Listen {
            what: "cannot listen on 127.0.0.1:1".into(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert!(!listen.is_model_error());
        assert!(!Error::input("a.png", "truncated").is_model_error());
        assert!(!Error::Exists { path: "a.png".into() }.is_model_error());
    }
}
