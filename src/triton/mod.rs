//! Scale-out on NVIDIA Triton Inference Server: the model repository generated from a bundle, and the
//! remote backend that runs a bundle's prior and backbone there.

pub mod client;
pub mod prior_graph;
pub mod proto;
pub mod repo;

pub use client::{TritonEngine, TritonOptions};
pub use repo::{InstanceKind, RepoOptions};

use crate::backend::Started;
use crate::bundle::{Bundle, Precision};
use crate::error::{Error, Result};
use crate::plan::{Plan, PlanRequest, TileRequest};

/// Requests in flight at once when the plan does not say (`--workers`).
pub const DEFAULT_IN_FLIGHT: usize = 4;
/// Tiles per request when the plan does not say (`--tile-batch`), capped by the model's max_batch_size.
pub const DEFAULT_TILE_BATCH: usize = 4;

/// Connect to the server in `opts` for `bundle` and decide the plan: requests in flight (`workers`,
/// default 4), tiles per request (default 4, at most the backbone's max_batch_size) and the tile (`auto`:
/// the one the repository was made for).
pub fn start(bundle: &Bundle, opts: &TritonOptions, req: &PlanRequest) -> Result<Started> {
    if req.precision != Precision::Fp32 {
        return Err(Error::Backend(format!(
            "--precision {} does not apply to the triton backend: the server's models decide the precision \
             (diffir triton-repo --tensorrt)",
            req.precision
        )));
    }
    let engine = TritonEngine::connect(bundle, opts)?;
    let remote = engine.remote().clone();
    let batch = req.tile_batch.unwrap_or(DEFAULT_TILE_BATCH);
    if batch > remote.max_batch && req.tile_batch.is_some() {
        let (_, backbone) = engine.models();
        return Err(Error::Backend(format!(
            "--tile-batch {batch} is over the Triton model '{backbone}' max_batch_size {}",
            remote.max_batch
        )));
    }
    let (tile, note) = match req.tile {
        TileRequest::Whole => (0, None),
        TileRequest::Pixels(n) => (n, None),
        TileRequest::Auto => match remote.tile {
            Some(t) => (t, Some("the repository's tile".to_string())),
            None => (crate::pipeline::DEFAULT_TILE, None),
        },
    };
    let plan = Plan {
        devices: vec![],
        workers: req.workers.unwrap_or(DEFAULT_IN_FLIGHT).max(1),
        threads: 1,
        tile_batch: batch.min(remote.max_batch).max(1),
        tile,
        precision: Precision::Fp32,
        note,
    };
    let describe = crate::backend::Engine::describe(&engine);
    let line = format!("backend: {describe} [{plan}] (a worker is one request in flight)");
    Ok(Started {
        engine: Box::new(engine),
        summary: line.clone(),
        runs_on: crate::backend::RunsOn::Triton,
        line,
        plan,
    })
}
