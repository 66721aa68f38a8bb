//! Tile planning, feathering weights and CPEN halo windows on arbitrary sizes: no panic, and the
//! invariants the pipeline relies on hold.
#![no_main]

use diffir::internal::tiling::{axis_weights, halo_windows, TilePlan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: [u16; 6]| {
    let multiple = [1usize, 2, 4, 8, 16, 32][data[0] as usize % 6];
    let h = (data[1] as usize % 600 + 1) * multiple;
    let w = (data[2] as usize % 600 + 1) * multiple;
    let tile = data[3] as usize % 700;
    let overlap = data[4] as usize % 400;
    let scale = [1usize, 2, 4][data[5] as usize % 3];
    let Ok(plan) = TilePlan::new(h, w, tile, overlap, multiple) else { return };
    for (starts, t, len) in [(&plan.ys, plan.tile_h, h), (&plan.xs, plan.tile_w, w)] {
        assert!(t <= len && t % multiple == 0);
        assert_eq!(starts[0], 0);
        assert_eq!(starts.last().unwrap() + t, len);
        assert!(starts.iter().all(|s| s % multiple == 0));
        assert!(starts.windows(2).all(|p| p[1] > p[0] && p[1] <= p[0] + t));
        if len * scale <= 1 << 14 {
            let ws = axis_weights(starts, t, len, scale, plan.overlap * scale);
            let mut sum = vec![0.0f64; len * scale];
            for (k, &s) in starts.iter().enumerate() {
                for (p, v) in ws[k].iter().enumerate() {
                    assert!(v.is_finite() && *v >= 0.0);
                    sum[s * scale + p] += *v as f64;
                }
            }
            assert!(sum.iter().all(|v| (v - 1.0).abs() < 1e-5));
        }
    }
    let halo = data[4] as usize % 100;
    let (win, windows) = halo_windows(h, tile.max(1), halo);
    assert_eq!(windows[0].core_start, 0);
    assert_eq!(windows.last().unwrap().core_end, h);
    for x in &windows {
        assert!(x.start + win <= h && x.start <= x.core_start && x.core_end <= x.start + win);
        assert!(x.start <= x.core_start.saturating_sub(halo) && x.start + win >= (x.core_end + halo).min(h));
    }
});
