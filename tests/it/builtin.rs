//! The built-in model: embedded, used without --model, and better than bicubic on real photo crops
//! (so a broken export or embedding cannot pass).

use diffir::internal::backend::BackendKind;
use diffir::{Bundle, Pipeline, PlanRequest, Tiling};

use crate::common::*;
use diffir::internal::pipeline::Stages;

/// PSNR on BT.601 luma (Y in [16, 235]) of 8-bit RGB, with `shave` border pixels removed.
fn psnr_y(a: &image::RgbImage, b: &image::RgbImage, shave: u32) -> f64 {
    let y =
        |p: &image::Rgb<u8>| 16.0 + (65.481 * p.0[0] as f64 + 128.553 * p.0[1] as f64 + 24.966 * p.0[2] as f64) / 255.0;
    let (w, h) = a.dimensions();
    let mut se = 0.0;
    let mut n = 0.0;
    for yy in shave..h - shave {
        for xx in shave..w - shave {
            se += (y(a.get_pixel(xx, yy)) - y(b.get_pixel(xx, yy))).powi(2);
            n += 1.0;
        }
    }
    10.0 * (255.0f64.powi(2) / (se / n)).log10()
}

#[test]
fn psnr_y_matches_the_python_protocol() {
    // Values from diffir_export.metrics.psnr_y on the same crop (bicubic vs HR).
    let d = repo().join("tests/fixtures/val_crops/chelsea");
    let hr = image::open(d.join("hr.png")).unwrap().into_rgb8();
    let bic = image::open(d.join("bicubic.png")).unwrap().into_rgb8();
    let p = psnr_y(&bic, &hr, 4);
    assert!((p - PY_CHELSEA_BICUBIC).abs() < 1e-6, "{p}");
}

const PY_CHELSEA_BICUBIC: f64 = 26.894131198808463;

#[test]
fn builtin_model_beats_bicubic_on_val_crops() {
    let bundle = Bundle::builtin().unwrap();
    assert_eq!((bundle.task(), bundle.scale()), (diffir::Task::Sr, 4));
    let p = Pipeline::start(bundle, BackendKind::Tract, &PlanRequest::default(), &Default::default()).unwrap();
    let noise = diffir::internal::sampler::seeded_noise(0, p.bundle().ipr_dim());
    let mut gains = vec![];
    for name in ["chelsea", "building", "wesaturate"] {
        let d = repo().join("tests/fixtures/val_crops").join(name);
        let lr = diffir::internal::image_io::read_image(&d.join("lr.png")).unwrap();
        let hr = image::open(d.join("hr.png")).unwrap().into_rgb8();
        let bic = image::open(d.join("bicubic.png")).unwrap().into_rgb8();
        let out = p.restore(&lr, None, &noise, &Tiling::default()).unwrap().image;
        let raw: Vec<u8> = out.data.iter().map(|&v| p.quantize().to_u8(v)).collect();
        let sr = image::RgbImage::from_raw(out.width as u32, out.height as u32, raw).unwrap();
        let (ours, base) = (psnr_y(&sr, &hr, 4), psnr_y(&bic, &hr, 4));
        eprintln!(
            "{name}: built-in {ours:.2} dB, bicubic {base:.2} dB ({:+.2} dB)",
            ours - base
        );
        gains.push(ours - base);
    }
    let mean = gains.iter().sum::<f64>() / gains.len() as f64;
    assert!(gains.iter().all(|&g| g > MIN_GAIN_EACH), "gains {gains:?}");
    assert!(mean > MIN_GAIN_MEAN, "mean gain {mean:.2} dB");
}

const MIN_GAIN_EACH: f64 = 0.4;
const MIN_GAIN_MEAN: f64 = 1.7;

#[test]
fn restore_without_model_uses_the_builtin_x4() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("big.png");
    let input = repo().join("tests/fixtures/val_crops/building/lr.png");
    let o = diffir(&["restore", s(&input), "-o", s(&out)], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(image::image_dimensions(&out).unwrap(), (128, 128));
    let info = diffir(&["info"], &[]);
    assert!(String::from_utf8_lossy(&info.stdout).contains("built-in model diffir-x4-small"));
}
