//! Integration tests: one binary, one module per concern.

mod activations;
mod builtin;
mod bundle_errors;
mod cli;
mod common;
mod gpu_plan;
mod gpu_start;
mod graph_rewrite;
mod hostile;
mod image_io;
mod memory;
mod official;
mod plugins;
mod reference_bundles;
mod serve;
mod server;
mod tiling;
mod triton;
mod video;
mod video_hostile;
