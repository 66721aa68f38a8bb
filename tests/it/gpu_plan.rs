//! The GPU-facing plan, checked on the CPU: batched tiles equal one tile per call, several devices assemble
//! exactly the single-device output whatever the completion order, out-of-memory errors shrink the batch
//! then the tile, fp16 backbones stay close to fp32, and the backbone's declared output must be scale x its
//! input.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diffir::internal::backend::multi::MultiDevice;
use diffir::internal::backend::tract::TractEngine;
use diffir::internal::backend::{BackendKind, Engine, EngineOptions, Input, Tensor};
use diffir::{Bundle, Error, GraphKind, Pipeline, Plan, PlanRequest, Precision, TileRequest, Tiling};

use crate::common::*;
use diffir::internal::pipeline::Stages;

/// A CPU pipeline with `batch` tiles per backbone call.
fn batched(bundle: &Bundle, kind: BackendKind, batch: usize, workers: usize) -> Pipeline {
    let req = PlanRequest {
        threads: workers,
        workers: Some(workers),
        tile_batch: Some(batch),
        tile: TileRequest::Pixels(32),
        ..Default::default()
    };
    Pipeline::start(bundle.clone(), kind, &req, &Default::default()).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

/// Batches of 3 tiles (the last one partial) against one tile per call.
fn check_batching(name: &str, kind: BackendKind) {
    let bundle = load(name);
    let (h, w) = (70, 90);
    let img = photo(h, w);
    let mask = mask_for(&bundle, h, w);
    let noise = diffir::internal::sampler::seeded_noise(3, bundle.ipr_dim());
    let one = batched(&bundle, kind, 1, 1);
    let tiling = one.planned_tiling(8);
    let want = one.restore(&img, mask.as_ref(), &noise, &tiling).unwrap();
    assert!(want.tiles >= 6, "{name}: {} tiles", want.tiles);
    for workers in [1, 2] {
        let three = batched(&bundle, kind, 3, workers);
        assert_eq!(three.plan().tile_batch, 3);
        let got = three.restore(&img, mask.as_ref(), &noise, &tiling).unwrap();
        let d = max_abs_diff(&got.image.data, &want.image.data);
        eprintln!("{name} on {kind}, batch 3, {workers} worker(s): max |diff| {d:.2e}");
        assert!(d <= tol::EXACT, "{name} on {kind}: batch 3 vs 1 differs by {d:e}");
    }
}

macro_rules! batching_cases {
    ($($test:ident: $name:literal, $kind:expr;)*) => {
        $(
            #[test]
            fn $test() {
                check_batching($name, $kind);
            }
        )*
    };
}

batching_cases! {
    batching_tract_sr_x4: "sr_x4", BackendKind::Tract;
    batching_tract_sr_x2: "sr_x2", BackendKind::Tract;
    batching_tract_deblur: "deblur", BackendKind::Tract;
    batching_tract_inpaint: "inpaint", BackendKind::Tract;
    batching_ort_sr_x4: "sr_x4", BackendKind::OrtCpu;
    batching_ort_sr_x2: "sr_x2", BackendKind::OrtCpu;
    batching_ort_sr_x1: "sr_x1", BackendKind::OrtCpu;
    batching_ort_deblur: "deblur", BackendKind::OrtCpu;
    batching_ort_inpaint: "inpaint", BackendKind::OrtCpu;
}

fn tract(bundle: &Bundle) -> TractEngine {
    TractEngine::new(
        bundle,
        &EngineOptions {
            threads: 1,
            workers: 1,
            ..Default::default()
        },
    )
    .unwrap()
}

/// One fake "device": a real engine that sleeps a varying time per call (so calls finish out of order) and
/// counts its calls.
struct Device {
    inner: TractEngine,
    calls: Arc<AtomicUsize>,
    delay_ms: u64,
}

impl Engine for Device {
    fn run(&self, graph: GraphKind, inputs: &[Input<'_>]) -> diffir::Result<Tensor> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(self.delay_ms * (1 + (n as u64 * 7) % 3)));
        self.inner.run(graph, inputs)
    }
    fn describe(&self) -> String {
        "fake device".into()
    }
}

fn plan(workers: usize, tile_batch: usize, tile: usize) -> Plan {
    Plan {
        devices: (0..workers as i32).collect(),
        workers,
        threads: 1,
        tile_batch,
        tile,
        precision: Precision::Fp32,
        notes: vec![],
    }
}

#[test]
fn several_devices_assemble_exactly_the_single_device_output() {
    let bundle = load("sr_x4");
    let img = photo(75, 100);
    let noise = diffir::internal::sampler::seeded_noise(1, bundle.ipr_dim());
    let tiling = Tiling { tile: 24, overlap: 8 };
    let single = Pipeline::with_plan(bundle.clone(), Box::new(tract(&bundle)), String::new(), plan(1, 1, 24)).unwrap();
    let want = single.restore(&img, None, &noise, &tiling).unwrap();
    for batch in [1, 2] {
        let counters: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
        let devices: Vec<Box<dyn Engine>> = counters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Box::new(Device {
                    inner: tract(&bundle),
                    calls: c.clone(),
                    delay_ms: [5, 1, 3][i],
                }) as Box<dyn Engine>
            })
            .collect();
        let multi = MultiDevice::new(devices);
        assert_eq!(multi.len(), 3);
        let p = Pipeline::with_plan(bundle.clone(), Box::new(multi), String::new(), plan(3, batch, 24)).unwrap();
        let got = p.restore(&img, None, &noise, &tiling).unwrap();
        assert_eq!(got.tiles, want.tiles);
        let calls: Vec<usize> = counters.iter().map(|c| c.load(Ordering::SeqCst)).collect();
        eprintln!("batch {batch}: calls per device {calls:?}");
        assert!(calls.iter().all(|&c| c > 0), "every device must get work: {calls:?}");
        let d = max_abs_diff(&got.image.data, &want.image.data);
        assert!(d <= tol::EXACT, "batch {batch}: multi-device output differs by {d:e}");
        if batch == 1 {
            assert!(
                got.image
                    .data
                    .iter()
                    .zip(&want.image.data)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "one tile per call: the assembly must be bit-exact"
            );
        }
    }
}

/// A rebuild of a fixed-shape engine: (tiles per batch, tile shape).
type Resize = (usize, Option<(usize, usize)>);

/// A device with room for `limit` backbone input pixels per call; more is a CUDA-style out-of-memory error.
/// Like the real fixed-shape engines it has a fixed batch (every call is padded up to it, and a smaller
/// call runs only after [`Engine::resize`] rebuilt its sessions for the smaller batch).
struct SmallDevice {
    inner: TractEngine,
    limit: usize,
    refused: AtomicUsize,
    batch: AtomicUsize,
    resizes: std::sync::Mutex<Vec<Resize>>,
}

impl SmallDevice {
    fn new(bundle: &Bundle, limit: usize, batch: usize) -> Self {
        SmallDevice {
            inner: tract(bundle),
            limit,
            refused: AtomicUsize::new(0),
            batch: AtomicUsize::new(batch),
            resizes: Default::default(),
        }
    }
}

impl Engine for SmallDevice {
    fn run(&self, graph: GraphKind, inputs: &[Input<'_>]) -> diffir::Result<Tensor> {
        if let (GraphKind::Backbone, Input::F32(shape, _)) = (graph, inputs[0]) {
            // The session runs its fixed batch whatever the call holds.
            let pixels = shape[0].max(self.batch.load(Ordering::SeqCst)) * shape[2] * shape[3];
            if pixels > self.limit {
                self.refused.fetch_add(1, Ordering::SeqCst);
                return Err(Error::OutOfMemory {
                    graph: GraphKind::Backbone,
                    msg: format!("CUDA failure 2: out of memory ({pixels} pixels)"),
                });
            }
        }
        self.inner.run(graph, inputs)
    }
    fn fixed_batch(&self, graph: GraphKind) -> Option<usize> {
        (graph == GraphKind::Backbone).then(|| self.batch.load(Ordering::SeqCst))
    }
    fn resize(&self, batch: usize, tile_shape: Option<(usize, usize)>) -> diffir::Result<()> {
        self.batch.store(batch, Ordering::SeqCst);
        self.resizes.lock().unwrap().push((batch, tile_shape));
        Ok(())
    }
    fn describe(&self) -> String {
        "small device".into()
    }
}

#[test]
fn out_of_memory_halves_the_batch_then_the_tile() {
    let bundle = load("sr_x4");
    let img = photo(70, 90);
    let noise = diffir::internal::sampler::seeded_noise(2, bundle.ipr_dim());
    // 4 tiles of 48² do not fit, nor 2, nor 1: the batch goes 4 → 2 → 1, then the tile 48 → 24.
    let small = SmallDevice::new(&bundle, 24 * 24, 4);
    let p = Pipeline::with_plan(bundle.clone(), Box::new(small), String::new(), plan(1, 4, 48)).unwrap();
    let got = p
        .restore(&img, None, &noise, &Tiling { tile: 48, overlap: 16 })
        .unwrap();
    assert_eq!(got.notes.len(), 3, "{:?}", got.notes);
    assert!(got.notes[0].contains("2 tile(s) per batch"), "{:?}", got.notes);
    assert!(got.notes[1].contains("1 tile(s) per batch"), "{:?}", got.notes);
    assert!(got.notes[2].contains("tile 24"), "{:?}", got.notes);
    // Exactly what a run planned with the final settings gives.
    let direct = Pipeline::with_plan(bundle.clone(), Box::new(tract(&bundle)), String::new(), plan(1, 1, 24)).unwrap();
    let want = direct
        .restore(&img, None, &noise, &Tiling { tile: 24, overlap: 12 })
        .unwrap();
    assert_eq!(got.tiles, want.tiles);
    // The same tiles; only the prior's CPEN windows differ (48 vs 24 pixels: exact within float rounding).
    let d = max_abs_diff(&got.image.data, &want.image.data);
    assert!(d <= tol::EXACT, "{d:e}");

    // A whole-image request that does not fit is tiled.
    let small = SmallDevice::new(&bundle, 40 * 40, 1);
    let p = Pipeline::with_plan(bundle.clone(), Box::new(small), String::new(), plan(1, 1, 0)).unwrap();
    let got = p.restore(&img, None, &noise, &Tiling::WHOLE).unwrap();
    assert!(got.tiles > 1 && !got.notes.is_empty(), "{:?}", got.notes);

    // Nothing fits: a typed error, never a panic.
    let none = SmallDevice::new(&bundle, 0, 2);
    let p = Pipeline::with_plan(bundle.clone(), Box::new(none), String::new(), plan(1, 2, 32)).unwrap();
    match p.restore(&img, None, &noise, &Tiling { tile: 32, overlap: 8 }) {
        Err(Error::OutOfMemory { msg, .. }) => assert!(msg.contains("does not fit"), "{msg}"),
        other => panic!("expected an out-of-memory error, got {:?}", other.map(|r| r.notes)),
    }
}

/// The defects: the retry halved the batch but every call was still padded to the engine's fixed batch, so
/// the same call ran out of memory again; and the next image started from the full plan again. Now the
/// engine is rebuilt at the smaller shape, and later restores keep it.
#[test]
fn out_of_memory_rebuilds_the_fixed_shape_and_later_images_keep_it() {
    let bundle = load("sr_x4");
    let img = photo(70, 90);
    let noise = diffir::internal::sampler::seeded_noise(2, bundle.ipr_dim());
    // Room for 2 tiles of 32² per call, not 4.
    let small = std::sync::Arc::new(SmallDevice::new(&bundle, 2 * 32 * 32, 4));
    struct Shared(std::sync::Arc<SmallDevice>);
    impl Engine for Shared {
        fn run(&self, graph: GraphKind, inputs: &[Input<'_>]) -> diffir::Result<Tensor> {
            self.0.run(graph, inputs)
        }
        fn fixed_batch(&self, graph: GraphKind) -> Option<usize> {
            self.0.fixed_batch(graph)
        }
        fn resize(&self, batch: usize, tile_shape: Option<(usize, usize)>) -> diffir::Result<()> {
            self.0.resize(batch, tile_shape)
        }
        fn describe(&self) -> String {
            self.0.describe()
        }
    }
    let p = Pipeline::with_plan(
        bundle.clone(),
        Box::new(Shared(small.clone())),
        String::new(),
        plan(1, 4, 32),
    )
    .unwrap();
    let tiling = Tiling { tile: 32, overlap: 8 };
    let first = p.restore(&img, None, &noise, &tiling).unwrap();
    assert_eq!(first.notes.len(), 1, "{:?}", first.notes);
    assert!(first.notes[0].contains("2 tile(s) per batch"), "{:?}", first.notes);
    assert_eq!(*small.resizes.lock().unwrap(), [(2, Some((32, 32)))]);
    assert_eq!(
        small.refused.load(Ordering::SeqCst),
        1,
        "the smaller shape must run at once"
    );
    // The next image starts from 2 tiles per batch: no new error, no new note, no new rebuild.
    let second = p.restore(&img, None, &noise, &tiling).unwrap();
    assert!(second.notes.is_empty(), "{:?}", second.notes);
    assert_eq!(small.refused.load(Ordering::SeqCst), 1);
    assert_eq!(small.resizes.lock().unwrap().len(), 1);
    assert_eq!(max_abs_diff(&first.image.data, &second.image.data), 0.0);
    // The same as a plan of 2 tiles per batch from the start.
    let direct = Pipeline::with_plan(bundle.clone(), Box::new(tract(&bundle)), String::new(), plan(1, 2, 32)).unwrap();
    let want = direct.restore(&img, None, &noise, &tiling).unwrap();
    assert!(max_abs_diff(&second.image.data, &want.image.data) <= tol::EXACT);
}

fn check_fp16(name: &str) {
    let bundle = load(name);
    assert_eq!(bundle.precisions(), [Precision::Fp32, Precision::Fp16], "{name}");
    let (h, w) = (40, 56);
    let img = photo(h, w);
    let mask = mask_for(&bundle, h, w);
    let noise = diffir::internal::sampler::seeded_noise(4, bundle.ipr_dim());
    let run = |precision| {
        let req = PlanRequest {
            threads: 1,
            tile: TileRequest::Whole,
            precision,
            ..Default::default()
        };
        let p = Pipeline::start(bundle.clone(), BackendKind::OrtCpu, &req, &Default::default()).unwrap();
        assert!(
            p.backend().line(diffir::Words::Flags).contains(precision.as_str()),
            "{}",
            p.backend().line(diffir::Words::Flags)
        );
        p.restore(&img, mask.as_ref(), &noise, &Tiling::WHOLE).unwrap()
    };
    let (a, b) = (run(Precision::Fp32), run(Precision::Fp16));
    assert_eq!(b.fp32_redos, 0, "{name}: no NaN/Inf expected");
    let d = max_abs_diff(&a.image.data, &b.image.data);
    let psnr = psnr(&a.image.data, &b.image.data);
    eprintln!("{name}: fp16 vs fp32 max |diff| {d:.2e}, {psnr:.1} dB");
    assert!(d > 0.0, "{name}: the fp16 graph must actually run");
    assert!(d <= tol::FP16, "{name}: fp16 differs by {d:e}");
    assert!(psnr >= tol::FP16_MIN_PSNR_DB, "{name}: fp16 only {psnr:.1} dB");
}

#[test]
fn fp16_sr_x4() {
    check_fp16("sr_x4");
}
#[test]
fn fp16_sr_x2() {
    check_fp16("sr_x2");
}
#[test]
fn fp16_sr_x1() {
    check_fp16("sr_x1");
}
#[test]
fn fp16_deblur() {
    check_fp16("deblur");
}
#[test]
fn fp16_inpaint() {
    check_fp16("inpaint");
}

#[test]
fn fp16_needs_a_bundle_that_carries_it_and_an_onnxruntime_backend() {
    let req = PlanRequest {
        precision: Precision::Fp16,
        ..Default::default()
    };
    let builtin = Bundle::builtin().unwrap();
    assert_eq!(builtin.precisions(), [Precision::Fp32]);
    let e = Pipeline::start(builtin, BackendKind::OrtCpu, &req, &Default::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("no fp16 backbone"), "{e}");
    let e = Pipeline::start(load("sr_x4"), BackendKind::Tract, &req, &Default::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("float32 only"), "{e}");
}

/// Rewrite a bundle's backbone output declaration: its spatial axes named like the input's (the defect of
/// bundles exported before the fix), or fixed to the given sizes.
fn with_output_dims(name: &str, dims: [&str; 2]) -> tempfile::TempDir {
    use prost::Message;
    use tract_onnx::pb::{tensor_shape_proto::dimension::Value, type_proto, ModelProto};
    let tmp = tempfile::tempdir().unwrap();
    copy_bundle(name, tmp.path());
    let path = tmp.path().join("backbone.onnx");
    let mut model = ModelProto::decode(&std::fs::read(&path).unwrap()[..]).unwrap();
    let graph = model.graph.as_mut().unwrap();
    let out = graph.output.iter_mut().find(|o| o.name == "output").unwrap();
    let Some(type_proto::Value::TensorType(t)) = out.r#type.as_mut().and_then(|t| t.value.as_mut()) else {
        panic!("tensor output")
    };
    let shape = t.shape.as_mut().unwrap();
    for (axis, d) in [(2, dims[0]), (3, dims[1])] {
        shape.dim[axis].value = Some(match d.parse::<i64>() {
            Ok(v) => Value::DimValue(v),
            Err(_) => Value::DimParam(d.into()),
        });
    }
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    tmp
}

#[test]
fn bundles_declare_the_backbone_output_at_scale() {
    for name in BUNDLES {
        let b = load(name);
        let out = &b.graph(GraphKind::Backbone).outputs[0];
        let dims: Vec<String> = out.dims.iter().map(|d| d.to_string()).collect();
        assert_eq!(dims[2..], ["out_height", "out_width"], "{name}");
    }
    let builtin = Bundle::builtin().unwrap();
    let dims: Vec<String> = builtin.graph(GraphKind::Backbone).outputs[0]
        .dims
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(dims[2..], ["out_height", "out_width"]);
}

#[test]
fn a_backbone_output_declared_at_the_input_size_is_rejected() {
    let old = with_output_dims("sr_x4", ["height", "width"]);
    let e = Bundle::load(old.path()).unwrap_err().to_string();
    assert!(
        e.contains("backbone.onnx") && e.contains("output height") && e.contains("4x"),
        "{e}"
    );
    assert!(e.contains("diffir_export upgrade"), "{e}");
    // At scale 1 the same names are true.
    let x1 = with_output_dims("sr_x1", ["height", "width"]);
    Bundle::load(x1.path()).unwrap();
    // A fixed output size contradicts a dynamic input.
    let fixed = with_output_dims("sr_x2", ["64", "64"]);
    let e = Bundle::load(fixed.path()).unwrap_err().to_string();
    assert!(e.contains("output height"), "{e}");
}

/// The bound-I/O path GPU sessions take, run on the CPU provider: a fixed batch of fixed-shape tiles in
/// preallocated buffers (a partial last batch padded), the same output as plain sessions.
fn check_bound(name: &str) {
    let bundle = load(name);
    let (h, w) = (60, 76);
    let img = photo(h, w);
    let mask = mask_for(&bundle, h, w);
    let noise = diffir::internal::sampler::seeded_noise(6, bundle.ipr_dim());
    let tile = 32usize.div_ceil(bundle.spec.size_multiple) * bundle.spec.size_multiple;
    let tiling = Tiling { tile, overlap: 8 };
    let plain = batched(&bundle, BackendKind::OrtCpu, 1, 1);
    let want = plain.restore(&img, mask.as_ref(), &noise, &tiling).unwrap();
    let opts = EngineOptions {
        threads: 1,
        workers: 1,
        tile_shape: Some((tile, tile)),
        tile_batch: 2,
        bind_io: true,
        ..Default::default()
    };
    let (engine, line) = diffir::internal::backend::select(BackendKind::OrtCpu, &bundle, &opts).unwrap();
    assert!(line.contains("bound I/O"), "{line}");
    assert_eq!(engine.fixed_batch(GraphKind::Backbone), Some(2));
    let p = Pipeline::with_plan(bundle.clone(), engine, line, plan(1, 2, tile)).unwrap();
    let got = p.restore(&img, mask.as_ref(), &noise, &tiling).unwrap();
    assert!(got.tiles % 2 == 1 || got.tiles > 2, "{name}: {} tiles", got.tiles);
    let d = max_abs_diff(&got.image.data, &want.image.data);
    eprintln!(
        "{name}: bound I/O vs plain sessions: max |diff| {d:.2e} over {} tiles",
        got.tiles
    );
    assert!(d <= tol::EXACT, "{name}: bound I/O differs by {d:e}");
    // An image smaller than one tile runs on the dynamic-shape session.
    let small = photo(20, 20);
    let small_mask = mask_for(&bundle, 20, 20);
    let a = plain.restore(&small, small_mask.as_ref(), &noise, &tiling).unwrap();
    let b = p.restore(&small, small_mask.as_ref(), &noise, &tiling).unwrap();
    assert!(max_abs_diff(&a.image.data, &b.image.data) <= tol::EXACT);
}

#[test]
fn bound_io_sr_x4() {
    check_bound("sr_x4");
}
#[test]
fn bound_io_sr_x2() {
    check_bound("sr_x2");
}
#[test]
fn bound_io_inpaint() {
    check_bound("inpaint");
}
