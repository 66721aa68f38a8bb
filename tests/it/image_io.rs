//! Image I/O through the CLI: bit depth, alpha, grayscale, palette, orientation, ICC, limits, formats.

use std::path::{Path, PathBuf};

use image::{ColorType, ImageDecoder};

use crate::common::*;

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/images").join(name)
}

fn decoded(path: &Path) -> (ColorType, (u32, u32), Option<Vec<u8>>) {
    let mut dec = image::ImageReader::open(path)
        .unwrap()
        .with_guessed_format()
        .unwrap()
        .into_decoder()
        .unwrap();
    let icc = dec.icc_profile().unwrap();
    (dec.color_type(), dec.dimensions(), icc)
}

#[test]
fn sixteen_bit_png_stays_sixteen_bit_and_never_passes_through_8_bits() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o.png");
    let o = restore_on_tract(&fixture("rgb16.png"), &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (color, dims, _) = decoded(&out);
    assert_eq!((color, dims), (ColorType::Rgb16, (112, 80)));
    // The same pixels as float32 .npy give the reference result.
    let src = image::open(fixture("rgb16.png")).unwrap().into_rgb16();
    let arr = ndarray::Array3::from_shape_vec(
        (20, 28, 3),
        src.into_raw().iter().map(|&v| v as f32 / 65535.0).collect(),
    )
    .unwrap();
    let npy_in = tmp.path().join("in.npy");
    ndarray_npy::write_npy(&npy_in, &arr).unwrap();
    let npy_out = tmp.path().join("o.npy");
    assert!(restore_on_tract(&npy_in, &npy_out, &[]).status.success());
    let want: ndarray::Array3<f32> = ndarray_npy::read_npy(&npy_out).unwrap();
    let got = image::open(&out).unwrap().into_rgb16();
    let d = got
        .into_raw()
        .iter()
        .zip(want.iter())
        .map(|(a, b)| (*a as f32 / 65535.0 - b).abs())
        .fold(0.0, f32::max);
    assert!(d <= 0.6 / 65535.0, "16-bit output off by {d}");
}

#[test]
fn sixteen_bit_tiff_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let tif = tmp.path().join("in.tif");
    image::open(fixture("rgb16.png")).unwrap().save(&tif).unwrap();
    let out = tmp.path().join("o.tif");
    let o = restore_on_tract(&tif, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(decoded(&out).0, ColorType::Rgb16);
}

#[test]
fn alpha_is_upscaled_separately_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o.png");
    let o = restore_on_tract(&fixture("rgba.png"), &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let img = image::open(&out).unwrap();
    assert_eq!(img.color(), ColorType::Rgba8);
    let img = img.into_rgba8();
    assert_eq!(img.dimensions(), (112, 80));
    // Fully transparent and fully opaque regions stay so; the ramp stays monotonic along a row.
    assert_eq!(img.get_pixel(4, 40).0[3], 0);
    assert_eq!(img.get_pixel(108, 40).0[3], 255);
    let row: Vec<u8> = (40..72).map(|x| img.get_pixel(x, 40).0[3]).collect();
    assert!(row.windows(2).all(|w| w[1] >= w[0]), "{row:?}");
    // JPEG cannot hold alpha: refused, not silently dropped.
    let jpg = tmp.path().join("o.jpg");
    let o = restore_on_tract(&fixture("rgba.png"), &jpg, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("alpha"), "{}", stderr(&o));
    assert!(!jpg.exists());
}

#[test]
fn grayscale_in_grayscale_out_and_palette_expanded() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("g.png");
    assert!(restore_on_tract(&fixture("gray.png"), &out, &[]).status.success());
    assert_eq!(decoded(&out).0, ColorType::L8);
    let out = tmp.path().join("p.png");
    assert!(restore_on_tract(&fixture("palette.png"), &out, &[]).status.success());
    assert_eq!(decoded(&out), (ColorType::Rgb8, (112, 80), None));
    let out = tmp.path().join("b.png");
    assert!(restore_on_tract(&fixture("image.bmp"), &out, &[]).status.success());
    assert_eq!(decoded(&out).1, (112, 80));
}

#[test]
fn exif_orientation_is_applied_on_load() {
    let tmp = tempfile::tempdir().unwrap();
    let (rot, up) = (tmp.path().join("r.npy"), tmp.path().join("u.npy"));
    assert!(restore_on_tract(&fixture("rotated.jpg"), &rot, &[]).status.success());
    assert!(restore_on_tract(&fixture("upright.jpg"), &up, &[]).status.success());
    let rot: ndarray::Array3<f32> = ndarray_npy::read_npy(&rot).unwrap();
    let up: ndarray::Array3<f32> = ndarray_npy::read_npy(&up).unwrap();
    // Orientation 6 = displayed turned 90° clockwise: width and height swap.
    assert_eq!(rot.shape(), &[112, 80, 3]);
    assert_eq!(up.shape(), &[80, 112, 3]);
    // The top-left of the displayed image is the stored bottom-left.
    let (a, b) = (rot[[2, 2, 0]], up[[77, 2, 0]]);
    assert!((a - b).abs() < 0.08, "{a} vs {b}");
}

#[test]
fn icc_profiles_are_carried() {
    let tmp = tempfile::tempdir().unwrap();
    let want = decoded(&fixture("icc.png")).2.expect("fixture has a profile");
    for (input, out) in [
        ("icc.png", "o.png"),
        ("icc.jpg", "o.jpg"),
        ("icc.png", "o.tif"),
        ("icc.png", "o.webp"),
    ] {
        let out = tmp.path().join(out);
        let o = restore_on_tract(&fixture(input), &out, &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            decoded(&out).2.as_deref(),
            Some(&want[..]),
            "{input} -> {}",
            out.display()
        );
    }
}

#[test]
fn broken_and_oversized_inputs_fail_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("in");
    std::fs::create_dir_all(&src).unwrap();
    for f in ["truncated.png", "huge.png", "gray.png"] {
        std::fs::copy(fixture(f), src.join(f)).unwrap();
    }
    let out = tmp.path().join("out");
    let o = restore_on_tract(&src, &out, &["--max-pixels", "1000000"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("truncated.png") && err.contains("cannot decode"), "{err}");
    assert!(
        err.contains("huge.png") && err.contains("60000x60000") && err.contains("--max-pixels"),
        "{err}"
    );
    assert!(err.contains("1 done, 2 failed"), "{err}");
    let written: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(written, vec![std::ffi::OsString::from("gray.png")]);
}

#[test]
fn folder_runs_keep_formats_unless_told() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("in");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(fixture("upright.jpg"), src.join("a.jpg")).unwrap();
    std::fs::copy(fixture("gray.png"), src.join("b.png")).unwrap();
    let out = tmp.path().join("same");
    assert!(restore_on_tract(&src, &out, &[]).status.success());
    assert!(out.join("a.jpg").is_file() && out.join("b.png").is_file());
    let (lo, hi) = (tmp.path().join("lo"), tmp.path().join("hi"));
    assert!(
        restore_on_tract(&src, &lo, &["--format", "jpg", "--jpeg-quality", "20"])
            .status
            .success()
    );
    assert!(
        restore_on_tract(&src, &hi, &["--format", "jpg", "--jpeg-quality", "98"])
            .status
            .success()
    );
    let size = |p: PathBuf| std::fs::metadata(p).unwrap().len();
    assert!(lo.join("b.jpg").is_file() && !lo.join("b.png").exists());
    assert!(size(lo.join("a.jpg")) < size(hi.join("a.jpg")));
}

#[test]
fn decode_and_encode_round_trip_in_memory() {
    let bytes = std::fs::read(bundles_dir().join("sr_x4/input.png")).unwrap();
    let picture = diffir::decode(&bytes).unwrap();
    for format in [
        diffir::OutputFormat::Png,
        diffir::OutputFormat::Tiff,
        diffir::OutputFormat::Bmp,
    ] {
        let encoded = diffir::encode(&picture.rgb, format).unwrap();
        let back = diffir::decode(&encoded).unwrap();
        assert_eq!(back.rgb, picture.rgb, "{format:?} is lossless at 8 bits");
    }
    let e = diffir::decode(b"garbage").unwrap_err().to_string();
    assert!(e.contains("(in memory)"), "{e}");
}
