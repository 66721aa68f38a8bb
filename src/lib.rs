//! `diffir`: a deployment runtime for DiffIR image restoration models.
//!
//! A model bundle (exported by `export/`) holds three ONNX graphs: CPEN (image → condition), the denoiser
//! (one reverse diffusion step of the 256-d prior) and the backbone (image + prior → restored image). The
//! runtime runs CPEN once per image, the reverse diffusion loop itself, then the backbone, on onnxruntime
//! or on pure-Rust tract.
//!
//! ```no_run
//! use diffir::{BackendKind, Bundle, EngineOptions, Pipeline};
//!
//! let bundle = Bundle::builtin()?; // or Bundle::load("path/to/bundle")
//! let pipeline = Pipeline::new(bundle, BackendKind::Auto, &EngineOptions::default())?;
//! let image = diffir::image_io::read_image("photo.png".as_ref())?;
//! let noise = diffir::sampler::seeded_noise(0, pipeline.bundle().ipr_dim());
//! let restored = pipeline.restore(&image, None, &noise, &diffir::Tiling::default())?;
//! diffir::image_io::write_image("big.png".as_ref(), &restored.image, pipeline.quantize(), false)?;
//! # Ok::<(), diffir::Error>(())
//! ```

pub mod backend;
pub mod bench;
pub mod builtin;
pub mod bundle;
pub mod cli;
pub mod error;
pub mod graph_rewrite;
pub mod image_io;
pub mod pipeline;
pub mod preprocess;
pub mod sampler;
pub mod schedule;
pub mod tiling;

pub use backend::{BackendKind, EngineOptions};
pub use bundle::{Bundle, GraphKind, Task};
pub use error::{Error, Result};
pub use pipeline::{Pipeline, Restored, Tiling, Timings};
pub use preprocess::{Image, Mask};
