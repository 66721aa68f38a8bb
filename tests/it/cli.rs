//! The command line: backends and fallback, batches, exit codes, output rules.

use std::path::Path;
use std::process::Output;

use crate::common::*;

fn model(name: &str) -> String {
    bundles_dir().join(name).to_string_lossy().into_owned()
}

fn input(name: &str) -> String {
    bundles_dir()
        .join(name)
        .join("input.png")
        .to_string_lossy()
        .into_owned()
}

const NO_ORT: (&str, &str) = ("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1.31.1");

/// `diffir restore` of fixture `image`'s input with bundle `bundle` into `out`, plus `extra` arguments.
fn restore(image: &str, bundle: &str, out: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Output {
    let (input, model) = (input(image), model(bundle));
    let mut args = vec!["restore", &input, "-o", s(out), "--model", &model];
    args.extend_from_slice(extra);
    diffir(&args, envs)
}

fn restore_sr_x4(out: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Output {
    restore("sr_x4", "sr_x4", out, extra, envs)
}

fn leftovers(dir: &Path) -> Vec<String> {
    let mut v = vec![];
    for e in walk(dir) {
        let n = e.file_name().unwrap().to_string_lossy().into_owned();
        if n.starts_with(".diffir-") {
            v.push(n);
        }
    }
    v
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn without_onnxruntime_auto_uses_tract_and_ort_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.png");
    let o = restore_sr_x4(&out, &[], &[NO_ORT]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("backend: tract") && err.contains("onnxruntime unavailable"),
        "{err}"
    );
    assert_eq!(image::image_dimensions(&out).unwrap(), (120, 84));

    let out2 = tmp.path().join("out2.png");
    for backend in ["ort", "ort-cpu", "ort-cuda", "ort-tensorrt"] {
        let o = restore_sr_x4(&out2, &["--backend", backend], &[NO_ORT]);
        assert_eq!(o.status.code(), Some(2), "{backend}");
        let err = stderr(&o);
        assert!(
            err.contains("install-onnxruntime.sh") && err.contains("ORT_DYLIB_PATH"),
            "{err}"
        );
        assert!(!out2.exists());
    }
}

#[test]
fn a_file_that_is_not_onnxruntime_is_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("libonnxruntime.so");
    std::fs::write(&fake, b"not a library").unwrap();
    let out = tmp.path().join("out.png");
    let o = restore_sr_x4(&out, &["--backend", "ort"], &[("ORT_DYLIB_PATH", s(&fake))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("libonnxruntime.so"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"));
}

#[test]
fn explicit_gpu_backend_without_gpu_build_is_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.png");
    let o = restore_sr_x4(&out, &["--backend", "ort-cuda"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("CUDA"), "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn batch_goes_on_after_a_bad_file_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("in");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::copy(input("sr_x4"), src.join("a.png")).unwrap();
    std::fs::copy(input("sr_x4"), src.join("sub/b.png")).unwrap();
    std::fs::write(src.join("broken.png"), b"\x89PNG garbage").unwrap();
    std::fs::write(src.join("notes.txt"), b"not an image").unwrap();
    let out = tmp.path().join("out");
    let o = diffir(
        &[
            "restore",
            s(&src),
            "-o",
            s(&out),
            "--model",
            &model("sr_x4"),
            "--backend",
            "tract",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("broken.png") && err.contains("2 done, 1 failed"), "{err}");
    assert!(out.join("a.png").is_file() && out.join("sub/b.png").is_file());
    assert!(!out.join("broken.png").exists() && !out.join("notes.txt").exists());
    assert!(leftovers(&out).is_empty());
}

#[test]
fn existing_outputs_are_kept_without_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.png");
    std::fs::write(&out, b"precious").unwrap();
    let o = restore_sr_x4(&out, &["--backend", "tract"], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");
    let o = restore_sr_x4(&out, &["--backend", "tract", "--overwrite"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(image::image_dimensions(&out).unwrap(), (120, 84));
    assert!(leftovers(tmp.path()).is_empty());
}

#[test]
fn masks_are_required_for_inpainting_only() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o.png");
    let mask = bundles_dir().join("inpaint/mask.png");
    let o = restore_sr_x4(&out, &["--mask", s(&mask)], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("takes none"), "{}", stderr(&o));
    let o = restore("inpaint", "inpaint", &out, &[], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--mask"), "{}", stderr(&o));
    // A mask of the wrong size fails that input (exit 1), naming both sizes.
    let o = restore("sr_x4", "inpaint", &out, &["--mask", s(&mask)], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("mask is 33x27 but the image is 30x21"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
}

#[test]
fn seed_changes_the_result_and_is_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |seed: &str, name: &str| {
        let out = tmp.path().join(name);
        let o = restore_sr_x4(&out, &["--seed", seed], &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        let a: ndarray::Array3<f32> = ndarray_npy::read_npy(&out).unwrap();
        a
    };
    let a = run("1", "a.npy");
    let b = run("1", "b.npy");
    let c = run("2", "c.npy");
    assert_eq!(a, b);
    assert!(max_abs_diff(a.as_slice().unwrap(), c.as_slice().unwrap()) > 1e-6);
}

#[test]
fn bad_noise_files_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let noise = tmp.path().join("noise.npy");
    ndarray_npy::write_npy(&noise, &ndarray::Array2::<f32>::zeros((1, 7))).unwrap();
    let out = tmp.path().join("o.png");
    let o = restore_sr_x4(&out, &["--init-noise", s(&noise)], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("noise has 7 values; the model needs 1×32"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn info_describes_the_bundle() {
    let o = diffir(&["info", "--model", &model("sr_x2")], &[]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "task:           sr",
        "scale:          2",
        "6 steps",
        "graph denoiser",
        "x[batchx32]",
    ] {
        assert!(text.contains(needle), "missing '{needle}' in\n{text}");
    }
    let o = diffir(&["info", "--model", "/nonexistent"], &[]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn output_formats_follow_the_extension() {
    let tmp = tempfile::tempdir().unwrap();
    for ext in ["png", "jpg", "webp", "tif"] {
        let out = tmp.path().join(format!("o.{ext}"));
        let o = restore("deblur", "deblur", &out, &[], &[]);
        assert!(o.status.success(), "{ext}: {}", stderr(&o));
        assert_eq!(image::image_dimensions(&out).unwrap(), (35, 29), "{ext}");
    }
    let out = tmp.path().join("o.gif");
    let o = restore("deblur", "deblur", &out, &[], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("unknown output extension"));
}

#[test]
fn cuda_options_must_be_key_value_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.png");
    for bad in ["prefer_nhwc", "=1", "prefer_nhwc="] {
        let o = restore_sr_x4(&out, &["--cuda-option", bad], &[]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
        assert!(stderr(&o).contains("is not KEY=VALUE"), "{}", stderr(&o));
        assert!(!out.exists());
    }
    // well-formed options only reach the CUDA provider; on the CPU they change nothing
    let o = restore_sr_x4(&out, &["--backend", "tract", "--cuda-option", "prefer_nhwc=1"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(out.exists());
}

#[test]
fn info_with_a_backend_prints_its_plan() {
    let o = diffir(
        &[
            "info",
            "--model",
            &model("sr_x4"),
            "--backend",
            "tract",
            "--threads",
            "2",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "precisions:     fp32, fp16",
        "backend: tract",
        "2 worker(s) x 1 thread(s), tile 128, 1 tile(s) per batch, fp32",
    ] {
        assert!(text.contains(needle), "missing '{needle}' in\n{text}");
    }
    // Without --backend nothing is started.
    let o = diffir(&["info"], &[]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("precisions:     fp32\n") && !text.contains("backend:"),
        "{text}"
    );
}

#[test]
fn plan_flags_are_validated() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.png");
    for (flags, needle) in [
        (&["--tile-batch", "0"][..], "--tile-batch"),
        (&["--tile", "big"][..], "not a tile size"),
        (&["--device", "0,0"][..], "names device 0 twice"),
        (&["--precision", "fp8"][..], "fp8"),
        (&["--backend", "tract", "--precision", "fp16"][..], "float32 only"),
    ] {
        let o = restore_sr_x4(&out, flags, &[]);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{flags:?}: {}", stderr(&o));
        assert!(!out.exists());
    }
    // Batched tiles and an explicit tile on the CPU.
    let o = restore_sr_x4(
        &out,
        &[
            "--backend",
            "tract",
            "--tile",
            "16",
            "--tile-batch",
            "2",
            "--threads",
            "1",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("tile 16, 2 tile(s) per batch"), "{}", stderr(&o));
}
