//! `diffir`: a deployment runtime for DiffIR image restoration models.
//!
//! A model bundle (exported by `export/`) holds five ONNX graphs: CPEN (image → condition) whole and split
//! at its pool (features, head) for exact tiling, the denoiser (one reverse diffusion step of the 256-d
//! prior) and the backbone (image + prior → restored image), optionally also in float16. The runtime runs
//! CPEN once per image, the reverse diffusion loop itself, then the backbone tile by tile, on onnxruntime
//! or on pure-Rust tract; or, to scale out, the prior and the backbone on a Triton Inference Server
//! ([`triton`]: `diffir triton-repo` writes the model repository, [`Pipeline::start_triton`] is the client).
//!
//! ```no_run
//! use diffir::{BackendKind, Bundle, Pipeline, PlanRequest};
//!
//! let bundle = Bundle::builtin()?; // or Bundle::load("path/to/bundle")
//! let pipeline = Pipeline::start(bundle, BackendKind::Auto, &PlanRequest::default(), &[])?;
//! let image = diffir::image_io::read_image("photo.png".as_ref())?;
//! let noise = diffir::sampler::seeded_noise(0, pipeline.bundle().ipr_dim());
//! let restored = pipeline.restore(&image, None, &noise, &pipeline.planned_tiling(16))?;
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
pub mod models;
pub mod options;
pub mod pipeline;
pub mod plan;
pub mod preprocess;
pub mod sampler;
pub mod schedule;
pub mod serve;
pub mod tiling;
pub mod triton;

pub use backend::{BackendKind, EngineOptions};
pub use bundle::{Bundle, GraphKind, Precision, Task};
pub use error::{Error, Result};
pub use options::{Noise, RestoreOptions};
pub use pipeline::{Control, Pipeline, Progress, Restored, Tiling, Timings};
pub use plan::{Plan, PlanRequest, TileRequest};
pub use preprocess::{Image, Mask};
