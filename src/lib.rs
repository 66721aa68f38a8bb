//! `diffir`: a deployment runtime for DiffIR image restoration models.
//!
//! A model bundle (exported by `export/`) holds five ONNX graphs: CPEN (image → condition) whole and split
//! at its pool (features, head) for exact tiling, the denoiser (one reverse diffusion step of the 256-d
//! prior) and the backbone (image + prior → restored image), optionally also in float16. The runtime runs
//! CPEN once per image, the reverse diffusion loop itself, then the backbone tile by tile, on onnxruntime
//! or on pure-Rust tract; or, to scale out, the prior and the backbone on a Triton Inference Server
//! ([`write_triton_repo`] writes the model repository, [`Pipeline::open`] with [`RestoreOptions::triton`] is the client).
//!
//! ```no_run
//! use diffir::{Bundle, Pipeline, RestoreOptions};
//!
//! let bundle = Bundle::builtin()?; // or Bundle::load("path/to/bundle")
//! let pipeline = Pipeline::open(bundle, &RestoreOptions::default())?;
//! let image = diffir::read_image("photo.png".as_ref())?;
//! let restored = pipeline.restore_image(&image, None)?;
//! diffir::write_image("big.png".as_ref(), &restored.image, pipeline.quantize(), false)?;
//! # Ok::<(), diffir::Error>(())
//! ```
//!
//! The modules behind these items are private; `internal` (hidden) reaches them for the crate's own tests
//! and is not a stable API.

#![warn(missing_docs)]

mod activations;
mod backend;
mod bench;
mod builtin;
mod bundle;
#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod cli;
mod digest;
mod error;
mod gpus;
mod graph_kind;
mod graph_rewrite;
mod icc;
mod image_io;
mod interrupt;
mod memory;
mod models;
mod names;
mod onnx_proto;
mod options;
mod pipeline;
mod plan;
mod preprocess;
mod sampler;
mod schedule;
#[cfg(feature = "serve")]
mod serve;
mod signature;
mod start;
mod tiling;
mod triton;
mod video;

/// The modules the public API is built from, reachable for the crate's own tests, benches, fuzz targets and
/// command line. **Not a stable API**: use the items the crate root re-exports.
#[doc(hidden)]
pub mod internal {
    pub mod activations {
        pub use crate::activations::*;
    }
    pub mod backend {
        pub use crate::backend::*;
    }
    pub mod bench {
        pub use crate::bench::*;
    }
    pub mod builtin {
        pub use crate::builtin::*;
    }
    pub mod bundle {
        pub use crate::bundle::*;
    }
    pub mod digest {
        pub use crate::digest::*;
    }
    pub mod error {
        pub use crate::error::*;
    }
    pub mod gpus {
        pub use crate::gpus::*;
    }
    pub mod graph_kind {
        pub use crate::graph_kind::*;
    }
    pub mod graph_rewrite {
        pub use crate::graph_rewrite::*;
    }
    pub mod icc {
        pub use crate::icc::*;
    }
    pub mod image_io {
        pub use crate::image_io::*;
    }
    pub mod interrupt {
        pub use crate::interrupt::*;
    }
    pub mod memory {
        pub use crate::memory::*;
    }
    pub mod models {
        pub use crate::models::*;
    }
    pub mod names {
        pub use crate::names::*;
    }
    pub mod onnx_proto {
        pub use crate::onnx_proto::*;
    }
    pub mod options {
        pub use crate::options::*;
    }
    pub mod pipeline {
        pub use crate::pipeline::*;
    }
    pub mod plan {
        pub use crate::plan::*;
    }
    pub mod preprocess {
        pub use crate::preprocess::*;
    }
    pub mod sampler {
        pub use crate::sampler::*;
    }
    pub mod schedule {
        pub use crate::schedule::*;
    }
    #[cfg(feature = "serve")]
    pub mod serve {
        pub use crate::serve::*;
    }
    pub mod signature {
        pub use crate::signature::*;
    }
    pub mod start {
        pub use crate::start::*;
    }
    pub mod tiling {
        pub use crate::tiling::*;
    }
    pub mod triton {
        pub use crate::triton::*;
    }
    pub mod video {
        pub use crate::video::*;
    }
}

pub use backend::{BackendKind, Engine, EngineOptions, Input, Tensor};
pub use bundle::{Bundle, GraphKind, Precision, Task};
pub use error::{Error, Result};
pub use image_io::{
    decode_picture, encode_picture, read_image, read_picture, to_samples, write_image, write_picture, Carry, Depth,
    OutputFormat, Picture, Sample, WriteOptions,
};
pub use options::{Noise, RestoreOptions};
pub use pipeline::{Control, Finish, Pipeline, PooledFeatures, Progress, Restored, RestoredPicture, Timings};
pub use plan::{Budget, Plan, PlanNote, PlanRequest, TileRequest, Words};
pub use preprocess::{Image, Mask, Quantize};
pub use start::{RunsOn, StartReport};
pub use tiling::Tiling;
pub use triton::{InstanceKind, RepoOptions, TritonOptions};
pub use video::{
    restore_video, Encoding, FrameProgress, Pass, PriorMode, Rational, Shot, VideoOptions, VideoReport, Window,
};

/// Decode an encoded image (PNG, JPEG, WebP, TIFF, BMP) from memory, with the same 16-bit, alpha, grayscale,
/// ICC and EXIF-orientation handling as files; at most [`RestoreOptions::default`]'s `max_pixels`.
pub fn decode(bytes: &[u8]) -> Result<Picture> {
    decode_picture(bytes, std::path::Path::new("(in memory)"), image_io::DEFAULT_MAX_PIXELS).map(|(p, _)| p)
}

/// Encode an RGB image in memory as `format` (8-bit, rounded; JPEG at quality 95). For alpha, 16-bit,
/// grayscale or ICC, use [`encode_picture`] with a [`Carry`].
pub fn encode(image: &Image, format: OutputFormat) -> Result<Vec<u8>> {
    let opts = WriteOptions {
        quantize: Quantize::Round,
        jpeg_quality: image_io::DEFAULT_JPEG_QUALITY,
        overwrite: false,
    };
    encode_picture(image, &Carry::default(), &opts, format)
}

/// Use the onnxruntime library at `path` (`libonnxruntime.so.1.31.1`) unless `ORT_DYLIB_PATH` names
/// another: a program that ships or finds its own copy (the Python package uses the onnxruntime wheel's)
/// calls this before its first pipeline opens. An error once a different library is loaded or named.
pub fn set_onnxruntime_library(path: &std::path::Path) -> Result<()> {
    backend::ort_library::prefer_library(path)
}

/// Write a Triton model repository for `bundle` into `out` (see `diffir triton-repo`); returns the model
/// folders written.
pub fn write_triton_repo(
    bundle: &Bundle,
    out: &std::path::Path,
    options: &RepoOptions,
) -> Result<Vec<std::path::PathBuf>> {
    triton::repo::write(bundle, out, options)
}
