//! Tiling: exact machinery on a pointwise toy model, one prior per image, and fidelity on real weights.

use std::sync::{Arc, Mutex};

use diffir::internal::backend::tract::TractEngine;
use diffir::internal::backend::{Engine, EngineOptions, Input, Tensor};
use diffir::{Bundle, GraphKind, Image, Pipeline, Tiling};

use crate::common::*;
use diffir::internal::pipeline::Stages;

/// A model whose backbone is pointwise (x4 nearest upsampling of a nonlinear function of each pixel), so
/// tiles agree exactly with the whole image wherever they overlap.
struct Pointwise {
    dim: usize,
}

fn pointwise(v: f32) -> f32 {
    (3.0 * v).sin() * 0.5 + v * v
}

impl Engine for Pointwise {
    fn run(&self, graph: GraphKind, inputs: &[Input<'_>]) -> diffir::Result<Tensor> {
        let Input::F32(shape, data) = inputs[0] else {
            panic!("float input")
        };
        Ok(match graph {
            GraphKind::Cpen | GraphKind::CpenHead => Tensor {
                shape: vec![1, self.dim],
                data: vec![0.5; self.dim],
            },
            GraphKind::Denoiser => Tensor {
                shape: vec![1, self.dim],
                data: data.to_vec(),
            },
            GraphKind::CpenFeatures => {
                let (h, w) = (shape[2], shape[3]);
                Tensor {
                    shape: vec![1, self.dim, h, w],
                    data: vec![0.5; self.dim * h * w],
                }
            }
            GraphKind::Backbone => {
                let (c, h, w, s) = (shape[1], shape[2], shape[3], 4);
                let mut out = vec![0.0; c * h * s * w * s];
                for ch in 0..c {
                    for y in 0..h * s {
                        for x in 0..w * s {
                            out[(ch * h * s + y) * w * s + x] = pointwise(data[(ch * h + y / s) * w + x / s]);
                        }
                    }
                }
                Tensor {
                    shape: vec![1, c, h * s, w * s],
                    data: out,
                }
            }
        })
    }
    fn describe(&self) -> String {
        "pointwise toy".into()
    }
}

fn photo(h: usize, w: usize) -> Image {
    let img = image::open(repo().join("samples/chelsea.png")).unwrap().into_rgb8();
    let mut data = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        for x in 0..w {
            let p = img.get_pixel((x % img.width() as usize) as u32, (y % img.height() as usize) as u32);
            data.extend(p.0.iter().map(|&v| v as f32 / 255.0));
        }
    }
    Image::new(h, w, data).unwrap()
}

#[test]
fn tiled_equals_untiled_bit_for_bit_on_a_pointwise_model() {
    let bundle = Bundle::load(bundles_dir().join("sr_x4")).unwrap();
    let noise = vec![0.1f32; bundle.ipr_dim()];
    for workers in [1, 2] {
        let p = Pipeline::with_engine(bundle.clone(), Box::new(Pointwise { dim: 32 }), String::new(), workers).unwrap();
        for (h, w) in [(1, 1), (7, 13), (31, 37), (8, 8), (23, 64), (61, 29)] {
            let img = photo(h, w);
            let whole = p.restore(&img, None, &noise, &Tiling::WHOLE).unwrap();
            assert_eq!(whole.tiles, 1);
            for (tile, overlap) in [(8, 0), (8, 4), (16, 8), (24, 8), (40, 16), (64, 32), (1000, 8)] {
                let tiled = p.restore(&img, None, &noise, &Tiling { tile, overlap }).unwrap();
                assert_eq!((tiled.image.height, tiled.image.width), (h * 4, w * 4));
                let same = tiled
                    .image
                    .data
                    .iter()
                    .zip(&whole.image.data)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{h}x{w} tile {tile} overlap {overlap} workers {workers}: tiled differs"
                );
            }
        }
    }
}

/// Records the prior every backbone call receives.
struct Spy {
    inner: TractEngine,
    iprs: Arc<Mutex<Vec<Vec<f32>>>>,
}

impl Engine for Spy {
    fn run(&self, graph: GraphKind, inputs: &[Input<'_>]) -> diffir::Result<Tensor> {
        if graph == GraphKind::Backbone {
            if let Input::F32(_, ipr) = inputs[1] {
                self.iprs.lock().unwrap().push(ipr.to_vec());
            }
        }
        self.inner.run(graph, inputs)
    }
    fn describe(&self) -> String {
        "spy".into()
    }
}

#[test]
fn every_tile_receives_the_whole_image_prior() {
    for name in ["sr_x4", "sr_x2", "sr_x1", "deblur"] {
        let bundle = Bundle::load(bundles_dir().join(name)).unwrap();
        let opts = EngineOptions {
            threads: 1,
            device: 0,
            workers: 2,
            ..Default::default()
        };
        let iprs = Arc::new(Mutex::new(vec![]));
        let spy = Spy {
            inner: TractEngine::new(&bundle, &opts).unwrap(),
            iprs: iprs.clone(),
        };
        let p = Pipeline::with_engine(bundle.clone(), Box::new(spy), String::new(), 2).unwrap();
        let img = photo(150, 210);
        let noise = diffir::internal::sampler::seeded_noise(5, bundle.ipr_dim());
        let whole = p.restore(&img, None, &noise, &Tiling::WHOLE).unwrap();
        iprs.lock().unwrap().clear();
        let tiled = p
            .restore(&img, None, &noise, &Tiling { tile: 64, overlap: 32 })
            .unwrap();
        assert!(
            tiled.tiles >= 6 && tiled.cpen_windows >= 4,
            "{name}: {} tiles",
            tiled.tiles
        );
        let seen = iprs.lock().unwrap().clone();
        assert_eq!(seen.len(), tiled.tiles, "{name}: one backbone call per tile");
        assert!(
            seen.iter().all(|v| v == tiled.ipr()),
            "{name}: a tile got another prior"
        );
        let d = max_abs_diff(tiled.ipr(), whole.ipr());
        let dc = max_abs_diff(&tiled.condition, &whole.condition);
        eprintln!(
            "{name}: tiled vs whole-image IPR {d:.2e}, condition {dc:.2e}, {} CPEN windows",
            tiled.cpen_windows
        );
        assert!(
            d <= tol::CLOSE && dc <= tol::CLOSE,
            "{name}: tiled prior differs by {d} (condition {dc})"
        );
    }
}

/// A reduced-precision engine that produces NaN in some tiles, with or without an fp32 path.
struct Flaky {
    inner: Pointwise,
    has_fp32: bool,
    calls: std::sync::atomic::AtomicUsize,
}

impl Engine for Flaky {
    fn run(&self, graph: GraphKind, inputs: &[Input<'_>]) -> diffir::Result<Tensor> {
        let mut out = self.inner.run(graph, inputs)?;
        if graph == GraphKind::Backbone && self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 3 == 1 {
            out.data[0] = f32::NAN;
        }
        Ok(out)
    }
    fn run_fp32(&self, graph: GraphKind, inputs: &[Input<'_>]) -> Option<diffir::Result<Tensor>> {
        self.has_fp32.then(|| self.inner.run(graph, inputs))
    }
    fn describe(&self) -> String {
        "flaky".into()
    }
}

#[test]
fn tiles_with_nan_are_redone_in_fp32_or_reported() {
    let bundle = Bundle::load(bundles_dir().join("sr_x4")).unwrap();
    let noise = vec![0.1f32; bundle.ipr_dim()];
    let img = photo(40, 48);
    let exact = Pipeline::with_engine(bundle.clone(), Box::new(Pointwise { dim: 32 }), String::new(), 1)
        .unwrap()
        .restore(&img, None, &noise, &Tiling { tile: 16, overlap: 8 })
        .unwrap();
    let flaky = Flaky {
        inner: Pointwise { dim: 32 },
        has_fp32: true,
        calls: Default::default(),
    };
    let p = Pipeline::with_engine(bundle.clone(), Box::new(flaky), String::new(), 1).unwrap();
    let r = p.restore(&img, None, &noise, &Tiling { tile: 16, overlap: 8 }).unwrap();
    assert!(r.fp32_redos >= 2, "{} redos", r.fp32_redos);
    assert_eq!(r.image.data, exact.image.data);
    let flaky = Flaky {
        inner: Pointwise { dim: 32 },
        has_fp32: false,
        calls: Default::default(),
    };
    let p = Pipeline::with_engine(bundle, Box::new(flaky), String::new(), 1).unwrap();
    let e = p
        .restore(&img, None, &noise, &Tiling { tile: 16, overlap: 8 })
        .unwrap_err()
        .to_string();
    assert!(e.contains("NaN or Inf"), "{e}");
}
