//! Every committed reference bundle, through both backends, against the Python references.

use diffir::internal::backend::{BackendKind, EngineOptions};
use diffir::{Bundle, Image, Mask, Pipeline, Tiling};

use crate::common::*;
use diffir::internal::pipeline::Stages;

struct Case {
    image: Image,
    mask: Option<Mask>,
    noise: Vec<f32>,
    npz: Npz,
}

fn case(name: &str) -> Case {
    let mut npz = Npz::open(&bundles_dir().join(name).join("reference.npz"));
    let img = npz.f32("image");
    let (h, w) = (img.shape()[0], img.shape()[1]);
    let image = Image::new(h, w, img.iter().copied().collect()).unwrap();
    let mask = if npz.has("mask") {
        Some(Mask::new(h, w, npz.f32("mask").iter().copied().collect()).unwrap())
    } else {
        None
    };
    let noise = npz.f32("noise").iter().copied().collect();
    Case {
        image,
        mask,
        noise,
        npz,
    }
}

fn pipeline(name: &str, kind: BackendKind) -> Pipeline {
    let bundle = Bundle::load(bundles_dir().join(name)).unwrap();
    Pipeline::new(
        bundle,
        kind,
        &EngineOptions {
            threads: 1,
            device: 0,
            workers: 1,
            ..Default::default()
        },
    )
    .unwrap()
}

fn check(name: &str, kind: BackendKind) {
    let mut c = case(name);
    let p = pipeline(name, kind);
    let r = p.restore(&c.image, c.mask.as_ref(), &c.noise, &Tiling::WHOLE).unwrap();
    let out = c.npz.f32("output");
    assert_eq!([r.image.height, r.image.width, 3], out.shape(), "{name}: output size");
    let d_out = max_abs_diff(&r.image.data, out.as_slice().unwrap());
    let d_ipr = max_abs_diff(r.ipr(), c.npz.f32("ipr").as_slice().unwrap());
    let d_c = max_abs_diff(&r.condition, c.npz.f32("c").as_slice().unwrap());
    let iprs = c.npz.f32("iprs");
    let d_steps = max_abs_diff(&r.steps.concat(), iprs.as_slice().unwrap());
    eprintln!("{name} {kind}: output {d_out:.2e}, ipr {d_ipr:.2e}, c {d_c:.2e}, steps {d_steps:.2e}");
    assert!(d_out <= tol::REFERENCE, "{name} {kind}: output differs by {d_out}");
    assert!(d_ipr <= tol::REFERENCE, "{name} {kind}: ipr differs by {d_ipr}");
    assert!(d_c <= tol::REFERENCE, "{name} {kind}: c differs by {d_c}");
    assert!(d_steps <= tol::REFERENCE, "{name} {kind}: steps differ by {d_steps}");
    assert_eq!(r.steps.len(), iprs.shape()[0], "{name}: number of steps");
}

/// One test per backend × bundle, so the first failure does not hide the rest.
macro_rules! reference_cases {
    ($($test:ident: $name:literal, $kind:expr;)*) => {
        $(
            #[test]
            fn $test() {
                check($name, $kind);
            }
        )*
    };
}

reference_cases! {
    reference_sr_x4_tract: "sr_x4", BackendKind::Tract;
    reference_sr_x2_tract: "sr_x2", BackendKind::Tract;
    reference_sr_x1_tract: "sr_x1", BackendKind::Tract;
    reference_deblur_tract: "deblur", BackendKind::Tract;
    reference_inpaint_tract: "inpaint", BackendKind::Tract;
    reference_sr_x4_ort: "sr_x4", BackendKind::OrtCpu;
    reference_sr_x2_ort: "sr_x2", BackendKind::OrtCpu;
    reference_sr_x1_ort: "sr_x1", BackendKind::OrtCpu;
    reference_deblur_ort: "deblur", BackendKind::OrtCpu;
    reference_inpaint_ort: "inpaint", BackendKind::OrtCpu;
}

#[test]
fn runs_are_deterministic_and_backends_agree() {
    for name in ["sr_x4", "inpaint"] {
        let c = case(name);
        let mut results = vec![];
        for kind in [BackendKind::Tract, BackendKind::OrtCpu] {
            let p = pipeline(name, kind);
            let a = p.restore(&c.image, c.mask.as_ref(), &c.noise, &Tiling::WHOLE).unwrap();
            let b = p.restore(&c.image, c.mask.as_ref(), &c.noise, &Tiling::WHOLE).unwrap();
            assert_eq!(a.image.data, b.image.data, "{name} {kind}: two runs differ");
            assert_eq!(a.ipr(), b.ipr());
            results.push(a);
        }
        let d = max_abs_diff(&results[0].image.data, &results[1].image.data);
        assert!(d <= tol::ENGINES, "{name}: tract and onnxruntime differ by {d}");
    }
}

/// The noise matters: a different draw changes the prior (so a test that ignored it would fail).
#[test]
fn the_initial_noise_is_used() {
    let c = case("sr_x4");
    let p = pipeline("sr_x4", BackendKind::Tract);
    let a = p.restore(&c.image, None, &c.noise, &Tiling::WHOLE).unwrap();
    let other: Vec<f32> = c.noise.iter().map(|v| -v).collect();
    let b = p.restore(&c.image, None, &other, &Tiling::WHOLE).unwrap();
    assert!(max_abs_diff(a.ipr(), b.ipr()) > tol::ENGINES);
}

/// Graph by graph: the denoiser on the recorded inputs of every step.
#[test]
fn denoiser_graph_matches_each_recorded_step() {
    let mut c = case("sr_x2");
    let p = pipeline("sr_x2", BackendKind::Tract);
    let xs = c.npz.f32("denoiser_x");
    let x0s = c.npz.f32("denoiser_x0");
    let cond = c.npz.f32("c");
    let t_count = xs.shape()[0];
    assert_eq!(t_count, 6, "the sr_x2 fixture uses T = 6");
    let steps = p.sample(cond.as_slice().unwrap(), &c.noise).unwrap();
    let sched = &p.bundle().schedule;
    for (i, t) in (0..t_count).rev().enumerate() {
        let x_in: Vec<f32> = xs.index_axis(ndarray::Axis(0), i).iter().copied().collect();
        let x0: Vec<f32> = x0s.index_axis(ndarray::Axis(0), i).iter().copied().collect();
        let want: Vec<f32> = x0
            .iter()
            .zip(&x_in)
            .map(|(p, x)| (sched.coef1[t] * *p as f64 + sched.coef2[t] * *x as f64) as f32)
            .collect();
        assert!(max_abs_diff(&steps[i], &want) <= tol::REFERENCE, "step t={t}");
    }
}
