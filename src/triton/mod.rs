//! Scale-out on NVIDIA Triton Inference Server: the model repository generated from a bundle, and the
//! remote backend that runs a bundle's prior and backbone there.

#[cfg(feature = "triton")]
pub mod client;
pub mod options;
pub mod prior_graph;
#[cfg(feature = "triton")]
pub mod proto;
pub mod repo;

#[cfg(feature = "triton")]
pub use client::TritonEngine;
pub use options::TritonOptions;
pub use repo::{InstanceKind, RepoOptions};

/// Requests in flight at once when the plan does not say (`--workers`).
pub const DEFAULT_IN_FLIGHT: usize = 4;
/// Tiles per request when the plan does not say (`--tile-batch`), capped by the model's max_batch_size.
pub const DEFAULT_TILE_BATCH: usize = 4;
