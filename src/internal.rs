//! The modules the public API is built from, reachable for the crate's own tests, benches, fuzz targets and
//! command line. **Not a stable API**: use the items the crate root re-exports.

#[path = "backend/mod.rs"]
pub mod backend;
#[path = "bench.rs"]
pub mod bench;
#[path = "builtin.rs"]
pub mod builtin;
#[path = "bundle.rs"]
pub mod bundle;
#[path = "error.rs"]
pub mod error;
#[path = "graph_rewrite.rs"]
pub mod graph_rewrite;
#[path = "image_io.rs"]
pub mod image_io;
#[path = "models.rs"]
pub mod models;
#[path = "options.rs"]
pub mod options;
#[path = "pipeline.rs"]
pub mod pipeline;
#[path = "plan.rs"]
pub mod plan;
#[path = "preprocess.rs"]
pub mod preprocess;
#[path = "sampler.rs"]
pub mod sampler;
#[path = "schedule.rs"]
pub mod schedule;
#[path = "serve/mod.rs"]
pub mod serve;
#[path = "tiling.rs"]
pub mod tiling;
#[path = "triton/mod.rs"]
pub mod triton;
