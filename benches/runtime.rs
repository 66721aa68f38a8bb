//! Criterion benches: each graph on each backend at a few sizes, the sampler, tile planning and blending,
//! and an end-to-end restore with the built-in model. Run: `cargo bench` (onnxruntime must be installed,
//! scripts/install-onnxruntime.sh; without it only tract is measured).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use diffir::internal::backend::{self, BackendKind, EngineOptions, Input};
use diffir::internal::pipeline::Stages;
use diffir::internal::tiling::{Blender, TilePlan};
use diffir::{Bundle, GraphKind, Pipeline, PlanRequest, Tiling};

fn backends(bundle: &Bundle) -> Vec<(&'static str, Box<dyn backend::Engine>)> {
    let opts = EngineOptions {
        threads: 1,
        workers: 1,
        ..Default::default()
    };
    let mut out = vec![];
    for (name, kind) in [("tract", BackendKind::Tract), ("ort", BackendKind::OrtCpu)] {
        match backend::select(kind, bundle, &opts) {
            Ok((engine, _)) => out.push((name, engine)),
            Err(e) => eprintln!("skipping {name}: {e}"),
        }
    }
    out
}

fn graphs(c: &mut Criterion) {
    let bundle = Bundle::builtin().expect("built-in model");
    let d = bundle.ipr_dim();
    let mut g = c.benchmark_group("graphs");
    g.sample_size(10);
    for (name, engine) in backends(&bundle) {
        for size in [32usize, 64, 128] {
            let image = vec![0.5f32; 3 * size * size];
            let shape = [1, 3, size, size];
            let ipr = vec![0.1f32; d];
            g.bench_with_input(BenchmarkId::new(format!("backbone/{name}"), size), &size, |b, _| {
                b.iter(|| {
                    engine.run(
                        GraphKind::Backbone,
                        &[Input::F32(&shape, &image), Input::F32(&[1, d], &ipr)],
                    )
                })
            });
            g.bench_with_input(BenchmarkId::new(format!("cpen/{name}"), size), &size, |b, _| {
                b.iter(|| engine.run(GraphKind::Cpen, &[Input::F32(&shape, &image)]))
            });
        }
        let x = vec![0.1f32; d];
        g.bench_function(format!("denoiser/{name}"), |b| {
            b.iter(|| {
                engine.run(
                    GraphKind::Denoiser,
                    &[Input::F32(&[1, d], &x), Input::I64(&[1], &[3]), Input::F32(&[1, d], &x)],
                )
            })
        });
    }
    g.finish();
}

fn sampler(c: &mut Criterion) {
    let schedule = diffir::internal::schedule::Schedule::new(4, 0.1, 0.99);
    let noise = diffir::internal::sampler::seeded_noise(0, 256);
    c.bench_function("sampler/reverse_chain_256", |b| {
        b.iter(|| diffir::internal::sampler::reverse_chain(&schedule, black_box(&noise), |x, _| Ok(x.to_vec())))
    });
    c.bench_function("sampler/seeded_noise_256", |b| {
        b.iter(|| diffir::internal::sampler::seeded_noise(black_box(7), 256))
    });
}

fn tiling(c: &mut Criterion) {
    c.bench_function("tiling/plan_3000x2000", |b| {
        b.iter(|| TilePlan::new(black_box(3000), black_box(2000), 256, 32, 8).unwrap())
    });
    let plan = TilePlan::new(512, 512, 256, 32, 8).unwrap();
    let (th, tw) = (plan.tile_h * 4, plan.tile_w * 4);
    let tile = vec![0.5f32; 3 * th * tw];
    c.bench_function("tiling/blend_512x512_x4", |b| {
        b.iter(|| {
            let mut out = vec![0.0f32; 2048 * 2048 * 3];
            let mut blender = Blender::new(&mut out, 2048, 2048, &plan, (512, 512), 4);
            for (i, j, _, _) in plan.tiles() {
                blender.add(i, j, &tile);
            }
            out
        })
    });
}

fn end_to_end(c: &mut Criterion) {
    let bundle = Bundle::builtin().expect("built-in model");
    let image = diffir::internal::bench::synthetic_image(128, 128);
    let mut g = c.benchmark_group("restore_builtin_128");
    g.sample_size(10);
    for kind in [BackendKind::Tract, BackendKind::OrtCpu] {
        let Ok(p) = Pipeline::start(bundle.clone(), kind, &PlanRequest::default(), &Default::default()) else {
            continue;
        };
        let noise = diffir::internal::sampler::seeded_noise(0, bundle.ipr_dim());
        g.bench_function(kind.to_string(), |b| {
            b.iter(|| p.restore(&image, None, &noise, &Tiling::default()))
        });
    }
    g.finish();
}

criterion_group!(benches, graphs, sampler, tiling, end_to_end);
criterion_main!(benches);
