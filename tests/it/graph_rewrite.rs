//! The GPU-session rewrite (ReduceL2 → Sqrt(ReduceSum(x·x))) computes the same outputs as the exported graph,
//! checked on the CPU backends for every committed bundle's backbone.

use diffir::internal::backend::{self, BackendKind, EngineOptions, Input};
use diffir::internal::graph_rewrite::reduce_l2_as_sum_of_squares;
use diffir::{Bundle, GraphKind};

use crate::common::*;

/// The bundle with its backbone replaced by the rewritten graph.
fn rewritten(original: &Bundle) -> Bundle {
    let bytes = &original.graph(GraphKind::Backbone).bytes;
    let new = reduce_l2_as_sum_of_squares(bytes)
        .unwrap()
        .expect("DIRformer has ReduceL2 nodes");
    original.with_graph_bytes(GraphKind::Backbone, new)
}

#[test]
fn rewritten_backbone_matches_the_exported_one() {
    let opts = EngineOptions {
        threads: 1,
        workers: 1,
        ..Default::default()
    };
    let mut checked = 0;
    for name in ["sr_x4", "sr_x2", "sr_x1", "deblur", "inpaint"] {
        let original = Bundle::load(bundles_dir().join(name)).unwrap();
        let new = rewritten(&original);
        let c = original.spec.input_channels;
        let m = original.spec.size_multiple;
        let (h, w) = (2 * m, 3 * m);
        let image: Vec<f32> = (0..c * h * w).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
        let ipr: Vec<f32> = (0..original.ipr_dim()).map(|i| ((i as f32) * 0.37).sin()).collect();
        let shape = [1, c, h, w];
        let inputs = [Input::F32(&shape, &image), Input::F32(&[1, ipr.len()], &ipr)];
        for kind in [BackendKind::Tract, BackendKind::OrtCpu] {
            let (Ok((a, _)), Ok((b, _))) = (
                backend::select(kind, &original, &opts),
                backend::select(kind, &new, &opts),
            ) else {
                eprintln!("{kind}: not available here, skipped");
                continue;
            };
            let want = a.run(GraphKind::Backbone, &inputs).unwrap();
            let got = b.run(GraphKind::Backbone, &inputs).unwrap();
            assert_eq!(want.shape, got.shape);
            let d = max_abs_diff(&want.data, &got.data);
            assert!(d <= tol::ENGINES, "{name} on {kind}: max |diff| {d:e}");
            assert!(
                want.data.iter().any(|v| v.abs() > 1e-3),
                "{name}: output is trivially small"
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "tract runs everywhere");
}
