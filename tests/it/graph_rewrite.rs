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

/// One engine thread, one worker.
fn one_thread() -> EngineOptions {
    EngineOptions {
        threads: 1,
        workers: 1,
        ..Default::default()
    }
}

/// A deterministic backbone input of 2 x 3 size multiples: the image's shape, the image and the prior.
fn backbone_input(b: &Bundle) -> ([usize; 4], Vec<f32>, Vec<f32>) {
    let c = b.spec.input_channels;
    let m = b.spec.size_multiple;
    let (h, w) = (2 * m, 3 * m);
    let image: Vec<f32> = (0..c * h * w).map(|i| ((i * 7919) % 1000) as f32 / 1000.0).collect();
    let ipr: Vec<f32> = (0..b.ipr_dim()).map(|i| ((i as f32) * 0.37).sin()).collect();
    ([1, c, h, w], image, ipr)
}

#[test]
fn rewritten_backbone_matches_the_exported_one() {
    let opts = one_thread();
    let mut checked = 0;
    for name in ["sr_x4", "sr_x2", "sr_x1", "deblur", "inpaint"] {
        let original = Bundle::load(bundles_dir().join(name)).unwrap();
        let new = rewritten(&original);
        let (shape, image, ipr) = backbone_input(&original);
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

/// The op types of a graph's nodes, and for each `ReduceMean` the op that produces its input.
fn reduce_mean_sources(onnx: &[u8]) -> (usize, Vec<String>, usize) {
    use prost::Message;
    let model = tract_onnx::pb::ModelProto::decode(onnx).unwrap();
    let g = model.graph.unwrap();
    let producer = |tensor: &str| {
        g.node
            .iter()
            .find(|n| n.output.iter().any(|o| o == tensor))
            .map_or("(graph input)".to_string(), |n| n.op_type.clone())
    };
    let means: Vec<String> = g
        .node
        .iter()
        .filter(|n| n.op_type == "ReduceMean")
        .map(|n| producer(&n.input[0]))
        .collect();
    let convs = g.node.iter().filter(|n| n.op_type == "Conv").count();
    (means.len(), means, convs)
}

/// The defect: `trt_layer_norm_fp32_fallback` finds LayerNorms by their Pow → ReduceMean pattern, and the
/// export-time rewrite had turned those ReduceMeans into convolutions, so TensorRT fp16 ran LayerNorm in fp16.
/// The graph handed to TensorRT has the pattern again, and computes the same outputs.
#[test]
fn the_graph_tensorrt_gets_has_the_layer_norm_pattern() {
    use diffir::internal::backend::ort::{for_provider, Provider};
    let opts = one_thread();
    let mut bundles: Vec<(String, Bundle)> = vec![("built-in".into(), Bundle::builtin().unwrap())];
    for name in ["sr_x4", "deblur"] {
        bundles.push((name.into(), Bundle::load(bundles_dir().join(name)).unwrap()));
    }
    for (name, original) in bundles {
        let plain = &original.graph(GraphKind::Backbone).bytes;
        let (before, _, convs_before) = reduce_mean_sources(plain);
        assert_eq!(before, 0, "{name}: the committed bundles carry the export-time rewrite");
        let trt = for_provider(&original, Provider::TensorRt).unwrap();
        let (means, sources, convs) = reduce_mean_sources(&trt.graph(GraphKind::Backbone).bytes);
        assert!(means > 0, "{name}: no ReduceMean in the TensorRT graph");
        assert_eq!(means % 2, 0, "{name}: each LayerNorm takes two means: {sources:?}");
        assert_eq!(
            sources.iter().filter(|s| *s == "Pow").count(),
            means / 2,
            "{name}: every variance must read a Pow: {sources:?}"
        );
        assert_eq!(convs, convs_before - means, "{name}: only the mean convolutions go");
        // CUDA keeps the rewritten graph (its convolutions are fast there).
        let cuda = for_provider(&original, Provider::Cuda).unwrap();
        assert_eq!(
            reduce_mean_sources(&cuda.graph(GraphKind::Backbone).bytes).0,
            0,
            "{name}"
        );
        // The same outputs on the CPU.
        let (shape, image, ipr) = backbone_input(&original);
        let inputs = [Input::F32(&shape, &image), Input::F32(&[1, ipr.len()], &ipr)];
        let (a, _) = backend::select(BackendKind::Tract, &original, &opts).unwrap();
        let (b, _) = backend::select(BackendKind::Tract, &trt, &opts).unwrap();
        let d = max_abs_diff(
            &a.run(GraphKind::Backbone, &inputs).unwrap().data,
            &b.run(GraphKind::Backbone, &inputs).unwrap().data,
        );
        assert!(d <= tol::ENGINES, "{name}: max |diff| {d:e}");
    }
}
