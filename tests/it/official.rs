//! The official fixtures (../shared): export each checkpoint with the exporter, run the CLI on both
//! backends with the stored noise, and compare with the official pipeline's outputs.

use std::path::{Path, PathBuf};
use std::process::Command;

use ndarray::{Array2, Array3};

use crate::common::*;
use diffir::internal::pipeline::Stages;

const FIXTURES: [&str; 5] = ["mini_sr_x4", "mini_sr_x2", "mini_sr_x1", "mini_deblur", "mini_inpaint"];

/// A hash of the exporter's sources, so cached exports are redone whenever the exporter changes. The same
/// hash as scripts/export_official.py (which the test command runs first, so no export happens here):
/// SHA-256 over each .py file under export/diffir_export, sorted by relative path, as path NUL content NUL;
/// the first 16 hex digits.
fn exporter_hash() -> String {
    use sha2::{Digest, Sha256};
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "py") {
                out.push(p);
            }
        }
    }
    let root = repo().join("export/diffir_export");
    let mut files = vec![];
    walk(&root, &mut files);
    let mut rel: Vec<(String, PathBuf)> = files
        .into_iter()
        .map(|f| (f.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/"), f))
        .collect();
    rel.sort();
    let mut h = Sha256::new();
    for (name, f) in rel {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(std::fs::read(&f).unwrap());
        h.update([0]);
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Export (once per exporter version; cached under target/) the fixture's checkpoint into a bundle.
fn exported(official: &Path, name: &str) -> PathBuf {
    let out = repo().join("target/official-bundles").join(exporter_hash()).join(name);
    if out.join("bundle.yaml").is_file() {
        return out;
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let status = Command::new(&python)
        .args(["-m", "diffir_export", "export", "--checkpoint"])
        .arg(official.join(name).join("checkpoint.pth"))
        .arg("--out")
        .arg(&out)
        .arg("--overwrite")
        .env("PYTHONPATH", repo().join("export"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run {python} for the exporter: {e}"));
    assert!(status.success(), "export of {name} failed");
    out
}

fn check_fixture(name: &str) {
    let Some(official) = official_dir() else { return };
    let bundle = exported(&official, name);
    let mut z = Npz::open(&official.join(name).join("pipeline.npz"));
    let tmp = tempfile::tempdir().unwrap();
    let image = z.f32("image");
    let image3: Array3<f32> = image.clone().into_dimensionality().unwrap();
    let noise: Array2<f32> = z.f32("noise").into_dimensionality().unwrap();
    let (inp, noise_path) = (tmp.path().join("in.npy"), tmp.path().join("noise.npy"));
    ndarray_npy::write_npy(&inp, &image3).unwrap();
    ndarray_npy::write_npy(&noise_path, &noise).unwrap();
    let mut extra: Vec<String> = vec![];
    if z.has("mask") {
        let mask: Array2<f32> = z.f32("mask").into_dimensionality().unwrap();
        let mask_png = tmp.path().join("mask.png");
        let raw: Vec<u8> = mask.iter().map(|&v| if v > 0.0 { 255 } else { 0 }).collect();
        image::GrayImage::from_raw(mask.ncols() as u32, mask.nrows() as u32, raw)
            .unwrap()
            .save(&mask_png)
            .unwrap();
        extra = vec!["--mask".into(), s(&mask_png).into()];
    }
    let want = z.f32("output");
    let want_u8 = z.u8("output_u8");
    for backend in ["tract", "ort"] {
        let out = tmp.path().join(format!("out-{backend}.npy"));
        let mut args = vec![
            "restore",
            s(&inp),
            "-o",
            s(&out),
            "--model",
            s(&bundle),
            "--backend",
            backend,
        ];
        args.extend(["--init-noise", s(&noise_path)]);
        args.extend(extra.iter().map(|x| x.as_str()));
        let o = diffir(&args, &[]);
        assert!(o.status.success(), "{name} {backend}: {}", stderr(&o));
        let got: Array3<f32> = ndarray_npy::read_npy(&out).unwrap();
        assert_eq!(got.shape(), want.shape(), "{name} {backend}: output shape");
        let d = max_abs_diff(got.as_slice().unwrap(), want.as_slice().unwrap());
        eprintln!("{name} {backend}: max |diff| = {d:.2e}");
        assert!(d <= tol::OFFICIAL, "{name} {backend}: output differs by {d}");

        // 8-bit path: the SR x4/x2 fixtures' images are exactly 8-bit.
        if name == "mini_sr_x4" || name == "mini_sr_x2" {
            let png_in = tmp.path().join("in.png");
            let raw: Vec<u8> = image.iter().map(|&v| (v * 255.0).round() as u8).collect();
            let (h, w) = (image.shape()[0] as u32, image.shape()[1] as u32);
            image::RgbImage::from_raw(w, h, raw).unwrap().save(&png_in).unwrap();
            let png_out = tmp.path().join(format!("out-{backend}.png"));
            let mut args = vec!["restore", s(&png_in), "-o", s(&png_out), "--model", s(&bundle)];
            args.extend(["--backend", backend, "--init-noise", s(&noise_path)]);
            let o = diffir(&args, &[]);
            assert!(o.status.success(), "{name} {backend} png: {}", stderr(&o));
            let got = image::open(&png_out).unwrap().into_rgb8().into_raw();
            let off: Vec<i32> = got
                .iter()
                .zip(want_u8.iter())
                .map(|(a, b)| (*a as i32 - *b as i32).abs())
                .collect();
            let max = off.iter().copied().max().unwrap();
            let frac = off.iter().filter(|&&d| d > 0).count() as f64 / off.len() as f64;
            eprintln!("{name} {backend} png: max off {max}, off-by-one fraction {frac:.5}");
            assert!(
                max <= 1 && frac <= 1e-3,
                "{name} {backend}: 8-bit output off by {max} ({frac})"
            );
        }
    }
}

#[test]
fn official_mini_sr_x4() {
    check_fixture("mini_sr_x4");
}

#[test]
fn official_mini_sr_x2() {
    check_fixture("mini_sr_x2");
}

#[test]
fn official_mini_sr_x1() {
    check_fixture("mini_sr_x1");
}

#[test]
fn official_mini_deblur() {
    check_fixture("mini_deblur");
}

#[test]
fn official_mini_inpaint() {
    check_fixture("mini_inpaint");
}

#[test]
fn fixture_list_is_complete() {
    let Some(official) = official_dir() else { return };
    let mut found: Vec<String> = std::fs::read_dir(official)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("checkpoint.pth").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut known = FIXTURES.map(String::from).to_vec();
    known.sort();
    assert_eq!(found, known, "a new official fixture needs a test here");
}

/// Tiled restore vs whole image at the default tile settings, on the official fixtures' weights and a real
/// photo: PSNR of the float outputs (the backbone's channel attention is global, so tiling approximates).
#[test]
fn tiled_restore_is_close_to_whole_image_on_official_weights() {
    use diffir::internal::backend::BackendKind;
    use diffir::{Bundle, Image, Pipeline, PlanRequest, Tiling};
    let Some(official) = official_dir() else { return };
    let photo = image::open(repo().join("samples/chelsea.png")).unwrap().into_rgb8();
    let (w, h) = photo.dimensions();
    let img = Image::new(
        h as usize,
        w as usize,
        photo.into_raw().iter().map(|&v| v as f32 / 255.0).collect(),
    )
    .unwrap();
    for name in ["mini_sr_x4", "mini_sr_x2", "mini_deblur"] {
        let bundle = Bundle::load(exported(&official, name)).unwrap();
        let noise = diffir::internal::sampler::seeded_noise(0, bundle.ipr_dim());
        let p = Pipeline::start(bundle, BackendKind::Tract, &PlanRequest::default(), &Default::default()).unwrap();
        let whole = p.restore(&img, None, &noise, &Tiling::WHOLE).unwrap();
        let tiled = p.restore(&img, None, &noise, &Tiling::default()).unwrap();
        assert!(tiled.tiles > 1, "{name}: the default tile must split this photo");
        let psnr = psnr(&tiled.image.data, &whole.image.data);
        eprintln!("{name}: tiled ({} tiles) vs whole image: {psnr:.1} dB", tiled.tiles);
        assert!(psnr >= 40.0, "{name}: tiled vs whole image only {psnr:.1} dB");
        assert!(max_abs_diff(tiled.ipr(), whole.ipr()) <= tol::CLOSE);
    }
}
