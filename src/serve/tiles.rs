//! Per-request tiles within the server's bounds: `tile` may only choose among the sizes the server allows
//! (whole images only where allowed), and on the CPU the request's backbone memory estimate must fit the
//! server's budget per restore, checked before any work.

use super::body::ApiError;
use super::{AppState, ServedModel};
use crate::error::{Error, Result};

/// The smallest tile a request may choose (smaller tiles multiply the work by their overlap).
pub const MIN_REQUEST_TILE: usize = 32;

/// The tile sizes requests may choose by default: the plan's tile and its halves down to 64.
pub fn default_request_tiles(plan_tile: usize) -> Vec<usize> {
    let mut tiles = vec![];
    let mut t = plan_tile;
    while t >= 64 {
        tiles.push(t);
        if !t.is_multiple_of(2) {
            break;
        }
        t /= 2;
    }
    if plan_tile == 0 {
        tiles.push(0);
    }
    tiles.sort_unstable();
    tiles
}

/// The tile a request runs with: its own `tile` if the server allows that size, else the plan's.
pub fn request_tile(model: &ServedModel, asked: Option<usize>) -> std::result::Result<usize, ApiError> {
    let Some(tile) = asked else {
        return Ok(model.pipeline.tiling().tile);
    };
    if model.request_tiles.contains(&tile) {
        return Ok(tile);
    }
    let sizes = model
        .request_tiles
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Err(ApiError::bad_request(if tile == 0 {
        format!("tile=0 (whole image) is not allowed on this server (--allow-whole-image); tiles allowed: {sizes}")
    } else {
        format!("tile={tile} is not allowed on this server (--request-tiles); tiles allowed: {sizes}")
    }))
}

/// The memory one backbone call of this restore needs, against the server's per-restore budget: refused
/// with [`Error::TooLarge`] before any work.
pub fn check_memory(state: &AppState, model: &ServedModel, tile: usize, (h, w): (usize, usize)) -> Result<()> {
    let Some(budget) = state.opts.memory_per_restore else {
        return Ok(());
    };
    let plan = model.pipeline.plan();
    let pixels = if tile == 0 {
        h * w
    } else {
        tile.min(h) * tile.min(w) * plan.tile_batch.max(1)
    };
    let per_pixel = crate::activations::bytes_per_pixel(model.pipeline.bundle(), plan.precision)?;
    let need = pixels as f64 * per_pixel * crate::plan::CPU_ACTIVATION_MARGIN;
    if need > budget {
        let how = if tile == 0 {
            "whole-image".to_string()
        } else {
            format!("tile {tile}")
        };
        return Err(Error::TooLarge {
            path: "image".into(),
            msg: format!(
                "{w}x{h} with {how} needs about {} for the backbone, over this server's {} per restore; use a smaller tile",
                crate::memory::size(need),
                crate::memory::size(budget)
            ),
        });
    }
    Ok(())
}
