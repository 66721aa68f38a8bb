//! Tiling for images of any size in bounded memory.
//!
//! - Backbone tiles have one fixed shape (edge tiles are shifted inward, never shrunk), start on multiples of
//!   the model's size multiple, and are feathered with raised-cosine weights normalised to sum to one.
//! - Blending is a running weighted mean written straight into the one output buffer:
//!   out ← out + w/(W_prev + w)·(tile − out). Where tiles agree, the output is bit-identical to theirs.
//! - CPEN's features are evaluated in windows of one fixed size that carry a halo at least CPEN's receptive
//!   field around a core region; the cores partition the image, so summing core features gives the exact
//!   global average pool.

/// `v` rounded up to a multiple of `multiple` (tiles and sizes to the model's size multiple).
pub fn round_up(v: usize, multiple: usize) -> usize {
    v.div_ceil(multiple) * multiple
}

/// Default backbone tile, in input (LR) pixels.
pub const DEFAULT_TILE: usize = 128;
/// Default overlap between backbone tiles, in input pixels.
pub const DEFAULT_TILE_OVERLAP: usize = 16;

/// How an image is split for the backbone (and CPEN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    /// Tile size in input pixels, rounded up to the model's size multiple; 0 = the whole image at once.
    /// CPEN is evaluated in windows of this core size plus its halo (exact either way).
    pub tile: usize,
    /// Overlap between neighbouring backbone tiles (input pixels), feathered with raised-cosine weights.
    pub overlap: usize,
}

impl Default for Tiling {
    fn default() -> Self {
        Tiling {
            tile: DEFAULT_TILE,
            overlap: DEFAULT_TILE_OVERLAP,
        }
    }
}

impl Tiling {
    /// The whole image in one piece.
    pub const WHOLE: Tiling = Tiling { tile: 0, overlap: 0 };

    /// The backbone's input shape for images larger than one tile (for fixed-shape engines).
    pub fn tile_shape(&self, multiple: usize) -> Option<(usize, usize)> {
        (self.tile > 0).then(|| {
            let t = round_up(self.tile, multiple);
            (t, t)
        })
    }
}

/// Starts of fixed-size tiles along one axis of `len` pixels: steps of `tile − overlap` from 0, the last one
/// shifted inward to end at `len`. `tile` is clamped to `len`. All values are multiples of `multiple` when
/// `len`, `tile` and `overlap` are.
pub fn axis_starts(len: usize, tile: usize, overlap: usize) -> (usize, Vec<usize>) {
    let tile = tile.min(len);
    if tile == len {
        return (tile, vec![0]);
    }
    let step = (tile - overlap.min(tile - 1)).max(1);
    let mut starts = vec![];
    let mut s = 0;
    while s + tile < len {
        starts.push(s);
        s += step;
    }
    starts.push(len - tile);
    starts.dedup();
    (tile, starts)
}

/// A grid of fixed-shape tiles over a (padded) input of `height × width`.
#[derive(Debug, Clone, PartialEq)]
pub struct TilePlan {
    /// Tile height (input pixels).
    pub tile_h: usize,
    /// Tile width (input pixels).
    pub tile_w: usize,
    /// Top rows of the tiles.
    pub ys: Vec<usize>,
    /// Left columns of the tiles.
    pub xs: Vec<usize>,
    /// Overlap between neighbours.
    pub overlap: usize,
}

impl TilePlan {
    /// Tiles of `tile` pixels (rounded up to `multiple`) overlapping by `overlap` (rounded up to `multiple`,
    /// then limited to half a tile). `height` and `width` must be multiples of `multiple`.
    pub fn new(height: usize, width: usize, tile: usize, overlap: usize, multiple: usize) -> Result<TilePlan, String> {
        if multiple == 0
            || !height.is_multiple_of(multiple)
            || !width.is_multiple_of(multiple)
            || height == 0
            || width == 0
        {
            return Err(format!("{height}x{width} is not a non-empty multiple of {multiple}"));
        }
        let tile = round_up(tile.max(1), multiple);
        let overlap = round_up(overlap, multiple).min(tile / 2 / multiple * multiple);
        let (tile_h, ys) = axis_starts(height, tile, overlap);
        let (tile_w, xs) = axis_starts(width, tile, overlap);
        Ok(TilePlan {
            tile_h,
            tile_w,
            ys,
            xs,
            overlap,
        })
    }

    /// How many tiles.
    pub fn count(&self) -> usize {
        self.ys.len() * self.xs.len()
    }

    /// (row, column, y, x) of every tile in raster order.
    pub fn tiles(&self) -> impl Iterator<Item = (usize, usize, usize, usize)> + '_ {
        self.ys
            .iter()
            .enumerate()
            .flat_map(move |(i, &y)| self.xs.iter().enumerate().map(move |(j, &x)| (i, j, y, x)))
    }
}

/// Feathering weights along one axis at output resolution: for each tile, `tile·scale` values. Each tile's
/// raw weight rises as a raised cosine over `ramp` output pixels from each edge that lies inside the image
/// (edges on the image border get full weight); the weights of the tiles covering a position are then
/// normalised to sum to one.
pub fn axis_weights(starts: &[usize], tile: usize, len: usize, scale: usize, ramp: usize) -> Vec<Vec<f32>> {
    let (t, l) = (tile * scale, len * scale);
    let raw: Vec<Vec<f64>> = starts
        .iter()
        .map(|&s0| {
            let s = s0 * scale;
            (0..t)
                .map(|p| {
                    let mut d = f64::INFINITY;
                    if s > 0 {
                        d = d.min(p as f64 + 0.5);
                    }
                    if s + t < l {
                        d = d.min((t - 1 - p) as f64 + 0.5);
                    }
                    if ramp == 0 || d >= ramp as f64 {
                        1.0
                    } else {
                        let u = d / ramp as f64;
                        (std::f64::consts::FRAC_PI_2 * u).sin().powi(2)
                    }
                })
                .collect()
        })
        .collect();
    let mut total = vec![0.0f64; l];
    for (k, &s0) in starts.iter().enumerate() {
        for (p, w) in raw[k].iter().enumerate() {
            total[s0 * scale + p] += w;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(k, &s0)| {
            raw[k]
                .iter()
                .enumerate()
                .map(|(p, w)| (w / total[s0 * scale + p]) as f32)
                .collect()
        })
        .collect()
}

/// For each tile along an axis, the sum of the weights of the tiles before it at each of its positions.
fn cumulative_before(starts: &[usize], weights: &[Vec<f32>], scale: usize) -> Vec<Vec<f32>> {
    starts
        .iter()
        .enumerate()
        .map(|(k, &s0)| {
            let (a, t) = (s0 * scale, weights[k].len());
            (0..t)
                .map(|p| {
                    let g = a + p;
                    starts[..k]
                        .iter()
                        .enumerate()
                        .filter(|(_, &s1)| g >= s1 * scale && g < s1 * scale + weights[k].len())
                        .map(|(k1, &s1)| weights[k1][g - s1 * scale])
                        .sum()
                })
                .collect()
        })
        .collect()
}

/// Assembles backbone tile outputs into one H×W×3 buffer (the cropped output), tile by tile in raster order.
pub struct Blender<'a> {
    out: &'a mut [f32],
    height: usize,
    width: usize,
    scale: usize,
    plan: &'a TilePlan,
    wy: Vec<Vec<f32>>,
    wx: Vec<Vec<f32>>,
    cy: Vec<Vec<f32>>,
    cx: Vec<Vec<f32>>,
    next: usize,
}

impl<'a> Blender<'a> {
    /// `out` is the final image (height × width × 3, zero-filled); the plan covers the padded input, of which
    /// the first height/scale × width/scale input pixels are kept.
    pub fn new(
        out: &'a mut [f32],
        height: usize,
        width: usize,
        plan: &'a TilePlan,
        padded: (usize, usize),
        scale: usize,
    ) -> Self {
        assert_eq!(out.len(), height * width * 3);
        let ramp = plan.overlap * scale;
        let wy = axis_weights(&plan.ys, plan.tile_h, padded.0, scale, ramp);
        let wx = axis_weights(&plan.xs, plan.tile_w, padded.1, scale, ramp);
        let cy = cumulative_before(&plan.ys, &wy, scale);
        let cx = cumulative_before(&plan.xs, &wx, scale);
        Blender {
            out,
            height,
            width,
            scale,
            plan,
            wy,
            wx,
            cy,
            cx,
            next: 0,
        }
    }

    /// Add tile (i, j)'s output: NCHW, batch 1, 3 channels, (tile_h·scale) × (tile_w·scale).
    /// Tiles must arrive in raster order.
    pub fn add(&mut self, i: usize, j: usize, tile: &[f32]) {
        assert_eq!(
            i * self.plan.xs.len() + j,
            self.next,
            "tiles must be blended in raster order"
        );
        self.next += 1;
        let (th, tw) = (self.plan.tile_h * self.scale, self.plan.tile_w * self.scale);
        assert_eq!(tile.len(), 3 * th * tw, "tile output size");
        let (y0, x0) = (self.plan.ys[i] * self.scale, self.plan.xs[j] * self.scale);
        let plane = th * tw;
        for ty in 0..th {
            let y = y0 + ty;
            if y >= self.height {
                break;
            }
            let (wyv, cyv) = (self.wy[i][ty], self.cy[i][ty]);
            for tx in 0..tw {
                let x = x0 + tx;
                if x >= self.width {
                    break;
                }
                let w = wyv * self.wx[j][tx];
                if w <= 0.0 {
                    continue;
                }
                // Weight of the tiles already blended here: rows above (all columns: Σ wx = 1) and this row's
                // tiles to the left.
                let prev = cyv + wyv * self.cx[j][tx];
                let f = w / (prev + w);
                let o = (y * self.width + x) * 3;
                let t = ty * tw + tx;
                for c in 0..3 {
                    let cur = self.out[o + c];
                    self.out[o + c] = cur + f * (tile[c * plane + t] - cur);
                }
            }
        }
    }
}

/// A CPEN evaluation window along one axis: its core region [core_start, core_end) and where the window of
/// fixed length starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HaloWindow {
    /// First row (or column) of the window's core.
    pub core_start: usize,
    /// One past the core's last row (or column).
    pub core_end: usize,
    /// First row (or column) read, halo included.
    pub start: usize,
}

/// Windows along an axis of `len` pixels whose cores (of `core` pixels) partition the axis, each window
/// `core + 2·halo` long (or `len`, if shorter), containing its core plus `halo` pixels on each side except
/// where the image ends. All values are multiples of `unit` when `len`, `core` and `halo` are.
pub fn halo_windows(len: usize, core: usize, halo: usize) -> (usize, Vec<HaloWindow>) {
    let core = core.max(1);
    let window = len.min(core + 2 * halo);
    let mut out = vec![];
    let mut s = 0;
    while s < len {
        let e = (s + core).min(len);
        let start = s.saturating_sub(halo).min(len - window);
        out.push(HaloWindow {
            core_start: s,
            core_end: e,
            start,
        });
        s = e;
    }
    (window, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_starts_cover_with_fixed_tiles_shifted_inward() {
        assert_eq!(axis_starts(64, 256, 32), (64, vec![0]));
        assert_eq!(axis_starts(100, 40, 8), (40, vec![0, 32, 60]));
        for len in [8, 16, 24, 200, 256, 264, 1000] {
            for (tile, overlap) in [(8, 0), (64, 16), (128, 32), (40, 16)] {
                let (t, s) = axis_starts(len, tile, overlap);
                assert!(t <= len && s[0] == 0 && *s.last().unwrap() + t == len, "{len} {tile}");
                for w in s.windows(2) {
                    assert!(
                        w[1] > w[0] && w[1] <= w[0] + t - overlap.min(t - 1),
                        "{len} {tile} {s:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn weights_sum_to_one_everywhere() {
        for (len, tile, overlap, scale) in [
            (200, 64, 16, 4),
            (40, 16, 8, 1),
            (32, 32, 8, 2),
            (264, 128, 32, 2),
            (100, 40, 0, 1),
        ] {
            let (t, starts) = axis_starts(len, tile, overlap);
            let w = axis_weights(&starts, t, len, scale, overlap * scale);
            let mut sum = vec![0.0f64; len * scale];
            for (k, &s) in starts.iter().enumerate() {
                for (p, v) in w[k].iter().enumerate() {
                    assert!(*v >= 0.0 && *v <= 1.0);
                    sum[s * scale + p] += *v as f64;
                }
            }
            for (p, v) in sum.iter().enumerate() {
                assert!((v - 1.0).abs() < 1e-6, "{len}/{tile}/{overlap}: sum {v} at {p}");
            }
        }
    }

    #[test]
    fn border_edges_are_not_feathered() {
        let (t, starts) = axis_starts(100, 40, 8);
        let w = axis_weights(&starts, t, 100, 1, 8);
        assert_eq!(w[0][0], 1.0);
        assert_eq!(*w.last().unwrap().last().unwrap(), 1.0);
        assert!(w[1][0] < 0.05 && w[0][39] < 0.05);
    }

    #[test]
    fn plan_validates_overlap_and_sizes() {
        assert_eq!(TilePlan::new(64, 64, 32, 24, 8).unwrap().overlap, 16);
        assert_eq!(TilePlan::new(64, 64, 8, 4, 8).unwrap().overlap, 0);
        assert!(TilePlan::new(60, 64, 32, 8, 8).is_err());
        let p = TilePlan::new(64, 128, 30, 5, 8).unwrap();
        assert_eq!((p.tile_h, p.tile_w, p.overlap), (32, 32, 8));
        assert_eq!(p.count(), p.ys.len() * p.xs.len());
        assert!(p.ys.iter().chain(&p.xs).all(|v| v % 8 == 0));
    }

    #[test]
    fn halo_windows_hold_core_plus_halo() {
        for len in [4, 20, 44, 100, 101, 300] {
            for (core, halo) in [(16, 6), (32, 22), (200, 88), (1, 0)] {
                let (win, ws) = halo_windows(len, core, halo);
                assert_eq!(ws[0].core_start, 0);
                assert_eq!(ws.last().unwrap().core_end, len);
                for pair in ws.windows(2) {
                    assert_eq!(pair[0].core_end, pair[1].core_start);
                }
                for w in &ws {
                    assert!(w.start + win <= len);
                    assert!(w.start <= w.core_start.saturating_sub(halo));
                    assert!(
                        w.start + win >= (w.core_end + halo).min(len),
                        "{len} {core} {halo} {w:?}"
                    );
                }
            }
        }
    }

    /// A pointwise "model": every tile equals the whole image there, so blending must reproduce it exactly.
    #[test]
    fn blending_agreeing_tiles_is_bit_exact() {
        let f = |y: usize, x: usize, c: usize| ((y * 31 + x * 17 + c * 7) % 97) as f32 / 97.0 + 1e-3 * (y as f32).sin();
        for (h, w, tile, overlap, scale) in [
            (8, 8, 8, 0, 1),
            (16, 24, 8, 4, 2),
            (40, 56, 16, 8, 4),
            (32, 32, 64, 8, 1),
        ] {
            let plan = TilePlan::new(h, w, tile, overlap, 1).unwrap();
            for (oh, ow) in [(h * scale, w * scale), (h * scale - 3, w * scale - 1)] {
                let mut out = vec![0.0f32; oh * ow * 3];
                let mut b = Blender::new(&mut out, oh, ow, &plan, (h, w), scale);
                for (i, j, y, x) in plan.tiles() {
                    let (th, tw) = (plan.tile_h * scale, plan.tile_w * scale);
                    let mut t = vec![0.0f32; 3 * th * tw];
                    for c in 0..3 {
                        for ty in 0..th {
                            for tx in 0..tw {
                                t[c * th * tw + ty * tw + tx] = f(y * scale + ty, x * scale + tx, c);
                            }
                        }
                    }
                    b.add(i, j, &t);
                }
                for y in 0..oh {
                    for x in 0..ow {
                        for c in 0..3 {
                            assert_eq!(out[(y * ow + x) * 3 + c].to_bits(), f(y, x, c).to_bits());
                        }
                    }
                }
            }
        }
    }

    /// Disagreeing tiles: the result is the normalised weighted mean (checked against a direct computation).
    #[test]
    fn blending_is_the_weighted_mean() {
        let plan = TilePlan::new(24, 24, 16, 8, 1).unwrap();
        let (wy, wx) = (
            axis_weights(&plan.ys, 16, 24, 1, 8),
            axis_weights(&plan.xs, 16, 24, 1, 8),
        );
        let mut out = vec![0.0f32; 24 * 24 * 3];
        let mut b = Blender::new(&mut out, 24, 24, &plan, (24, 24), 1);
        for (i, j, _, _) in plan.tiles() {
            b.add(i, j, &vec![(i * 2 + j) as f32; 3 * 16 * 16]);
        }
        for y in 0..24 {
            for x in 0..24 {
                let mut want = 0.0f64;
                for (i, &ty) in plan.ys.iter().enumerate() {
                    for (j, &tx) in plan.xs.iter().enumerate() {
                        if y >= ty && y < ty + 16 && x >= tx && x < tx + 16 {
                            want += (wy[i][y - ty] * wx[j][x - tx]) as f64 * (i * 2 + j) as f64;
                        }
                    }
                }
                assert!((out[(y * 24 + x) * 3] as f64 - want).abs() < 1e-5, "({y},{x})");
            }
        }
    }
}
