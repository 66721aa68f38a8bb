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
        err.contains("backend: tract") && err.contains("onnxruntime not found"),
        "{err}"
    );
    assert_eq!(image::image_dimensions(&out).unwrap(), (120, 84));

    let out2 = tmp.path().join("out2.png");
    for backend in ["ort", "ort-cpu", "ort-cuda", "ort-tensorrt"] {
        let o = restore_sr_x4(&out2, &["--backend", backend], &[NO_ORT]);
        assert_eq!(o.status.code(), Some(2), "{backend}");
        let err = stderr(&o);
        assert!(err.contains("ORT_DYLIB_PATH"), "{err}");
        assert_eq!(err.matches("not found").count(), 1, "said once: {err}");
        // the GPU backends point to the GPU package, the others to the CPU installer
        let gpu = backend.starts_with("ort-cuda") || backend == "ort-tensorrt";
        assert_eq!(err.contains("onnxruntime-gpu=="), gpu, "{err}");
        assert_eq!(err.contains("install-onnxruntime.sh"), !gpu, "{err}");
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
    // The onnxruntime library alone in a folder: whether it is the CPU or the GPU build, its CUDA provider
    // cannot start there (no provider libraries beside it), on any machine, with or without a GPU.
    let tmp = tempfile::tempdir().unwrap();
    let lib = diffir::internal::backend::ort::library_candidates()
        .into_iter()
        .find(|p| p.is_file())
        .expect("the onnxruntime library (scripts/install-onnxruntime.sh)");
    let alone = tmp.path().join(lib.file_name().unwrap());
    std::fs::copy(&lib, &alone).unwrap();
    let out = tmp.path().join("out.png");
    let o = restore_sr_x4(&out, &["--backend", "ort-cuda"], &[("ORT_DYLIB_PATH", s(&alone))]);
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
    let o = restore_on_tract(&src, &out, &[]);
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
    // --max-pixels applies to the mask too (33x27 = 891 pixels).
    let o = restore(
        "inpaint",
        "inpaint",
        &out,
        &["--mask", s(&mask), "--max-pixels", "800"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("mask.png") && stderr(&o).contains("--max-pixels"),
        "{}",
        stderr(&o)
    );
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
    assert!(max_abs_diff(a.as_slice().unwrap(), c.as_slice().unwrap()) > tol::EXACT);
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
        "graph rewrites: channel_means_as_conv",
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

/// Outputs get what a plain file write gives: 0666 less the umask when new, the old mode when replaced.
#[cfg(unix)]
#[test]
fn outputs_get_ordinary_file_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.png");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for (umask, want) in [("022", 0o644), ("027", 0o640), ("002", 0o664)] {
        let _ = std::fs::remove_file(&out);
        let script = format!(
            "umask {umask}; exec \"$0\" restore {} -o {} --model {} --backend tract",
            input("sr_x4"),
            s(&out),
            model("sr_x4")
        );
        let o = std::process::Command::new("sh")
            .args(["-c", &script, env!("CARGO_BIN_EXE_diffir")])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(mode(&out), want, "umask {umask}");
    }
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o604)).unwrap();
    let o = restore_sr_x4(&out, &["--backend", "tract", "--overwrite"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(mode(&out), 0o604, "--overwrite keeps the replaced file's mode");
}

/// A folder of copies of the sr_x4 fixture input.
fn folder_with_inputs(dir: &Path, names: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    for n in names {
        std::fs::copy(input("sr_x4"), dir.join(n)).unwrap();
    }
}

#[test]
fn messages_name_the_input_once_and_missing_inputs_plainly() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no_such_folder");
    let o = diffir(&["restore", s(&missing), "-o", s(&tmp.path().join("out"))], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no_such_folder: no such file or folder"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("extension"), "{}", stderr(&o));
    // A bad file in a batch: its path once in its error line.
    let dir = tmp.path().join("in");
    folder_with_inputs(&dir, &["a.png"]);
    std::fs::write(dir.join("b.png"), b"not a png").unwrap();
    let o = diffir(
        &[
            "restore",
            s(&dir),
            "-o",
            s(&tmp.path().join("out")),
            "--model",
            &model("sr_x4"),
            "--backend",
            "tract",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let line = stderr(&o).lines().find(|l| l.contains("b.png")).unwrap().to_string();
    assert_eq!(line.matches("b.png").count(), 1, "{line}");
}

#[test]
fn quiet_default_and_verbose_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.png");
    let o = restore_sr_x4(&out, &["--backend", "ort-cpu"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(lines[0].starts_with("backend: onnxruntime 1.31.1 CPU ["), "{err}");
    assert!(
        !lines[0].contains("libonnxruntime") && !lines[0].contains("failed"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("1 image(s) restored in ") && lines[1].ends_with("out.png"),
        "{err}"
    );
    std::fs::remove_file(&out).unwrap();
    let o = restore_sr_x4(&out, &["--backend", "ort-cpu", "-q"], &[]);
    assert!(o.status.success() && stderr(&o).is_empty(), "{}", stderr(&o));
    std::fs::remove_file(&out).unwrap();
    let o = restore_sr_x4(&out, &["--backend", "ort-cpu", "-v"], &[]);
    assert!(stderr(&o).contains("libonnxruntime.so.1.31.1"), "{}", stderr(&o));
    // auto on a CPU-only library: one short line that says GPU providers are not available, without paths.
    std::fs::remove_file(&out).unwrap();
    let o = restore_sr_x4(&out, &[], &[]);
    let first = stderr(&o).lines().next().unwrap_or_default().to_string();
    assert!(
        first.contains("TensorRT, CUDA not available here; -v says why"),
        "{first}"
    );
}

#[test]
fn jpeg_refuses_alpha_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let rgba = tmp.path().join("rgba.png");
    image::RgbaImage::from_fn(20, 16, |x, y| image::Rgba([x as u8 * 9, y as u8 * 13, 90, 200]))
        .save(&rgba)
        .unwrap();
    let out = tmp.path().join("o.jpg");
    let o = restore_on_tract(&rgba, &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("JPEG cannot hold the input's alpha channel"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
}

#[cfg(unix)]
#[test]
fn folder_walks_enter_each_folder_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    folder_with_inputs(&dir, &["a.png", "b.png"]);
    std::os::unix::fs::symlink(".", dir.join("loop")).unwrap();
    let out = tmp.path().join("out");
    let o = restore_on_tract(&dir, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("loop: not entered"), "{}", stderr(&o));
    let written: Vec<_> = walk(&out);
    assert_eq!(written.len(), 2, "{written:?}");
}

#[test]
fn one_bit_bmp_stays_grayscale() {
    // 8x2 pixels, 1 bit per pixel, palette black/white; rows padded to 4 bytes.
    let (w, h) = (8u32, 2u32);
    let pixels: [u8; 8] = [0b1010_1010, 0, 0, 0, 0b1111_0000, 0, 0, 0];
    let offset = 14 + 40 + 8;
    let mut bmp = vec![];
    bmp.extend_from_slice(b"BM");
    bmp.extend_from_slice(&(offset + pixels.len() as u32).to_le_bytes());
    bmp.extend_from_slice(&[0; 4]);
    bmp.extend_from_slice(&offset.to_le_bytes());
    bmp.extend_from_slice(&40u32.to_le_bytes());
    bmp.extend_from_slice(&(w as i32).to_le_bytes());
    bmp.extend_from_slice(&(h as i32).to_le_bytes());
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&[0; 4]); // BI_RGB
    bmp.extend_from_slice(&(pixels.len() as u32).to_le_bytes());
    bmp.extend_from_slice(&[0; 8]);
    bmp.extend_from_slice(&2u32.to_le_bytes());
    bmp.extend_from_slice(&[0; 4]);
    bmp.extend_from_slice(&[0, 0, 0, 0, 255, 255, 255, 0]);
    bmp.extend_from_slice(&pixels);
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("bw.bmp");
    std::fs::write(&input, &bmp).unwrap();
    let out = tmp.path().join("bw_x4.png");
    let o = restore_on_tract(&input, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let img = image::open(&out).unwrap();
    assert_eq!(img.color(), image::ColorType::L8);
    assert_eq!((img.width(), img.height()), (32, 8));
}

#[test]
fn batches_resume_and_never_overwrite_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    folder_with_inputs(&dir, &["a.png", "b.png"]);
    let out = tmp.path().join("out");
    let bundle = model("sr_x4");
    let run = |extra: &[&str]| {
        let mut v = vec![
            "restore",
            s(&dir),
            "-o",
            s(&out),
            "--model",
            &bundle,
            "--backend",
            "tract",
        ];
        v.extend_from_slice(extra);
        diffir(&v, &[])
    };
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(input("sr_x4"), out.join("a.png")).unwrap();
    let o = run(&["--skip-existing"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("1 image(s) restored, 1 skipped (output exists)"),
        "{}",
        stderr(&o)
    );
    // -o is the input folder: refused, nothing written; with --suffix the outputs sit beside the inputs.
    let o = restore_on_tract(&dir, &dir, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--suffix"), "{}", stderr(&o));
    assert_eq!(walk(&dir).len(), 2);
    let o = diffir(
        &[
            "restore",
            "-i",
            s(&dir),
            "-o",
            s(&dir),
            "--suffix",
            "_x4",
            "-n",
            &model("sr_x4"),
            "--backend",
            "tract",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.join("a_x4.png").is_file() && dir.join("b_x4.png").is_file());
}

#[test]
fn flags_people_know_from_other_upscalers() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o");
    std::fs::create_dir_all(&out).unwrap();
    let o = diffir(
        &[
            "restore",
            "-i",
            &input("sr_x4"),
            "-o",
            s(&out),
            "-n",
            &model("sr_x4"),
            "-t",
            "16",
            "-g",
            "0",
            "-f",
            "webp",
            "--backend",
            "tract",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        out.join("input.webp").is_file(),
        "-f webp into the folder given with -o"
    );
    // --outscale: an x4 model's result resized to 2x the input (30x21 -> 60x42).
    let half = tmp.path().join("half.png");
    let o = restore_sr_x4(&half, &["--backend", "tract", "--outscale", "2"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(image::image_dimensions(&half).unwrap(), (60, 42));
    let o = restore_sr_x4(&half, &["--outscale", "0"], &[]);
    assert_eq!(o.status.code(), Some(2));
    // --tta: the same size, a different (averaged) result.
    let (plain, tta) = (tmp.path().join("p.png"), tmp.path().join("t.png"));
    assert!(restore_sr_x4(&plain, &["--backend", "tract"], &[]).status.success());
    let o = restore_sr_x4(&tta, &["--backend", "tract", "--tta"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (a, b) = (
        image::open(&plain).unwrap().into_rgb8(),
        image::open(&tta).unwrap().into_rgb8(),
    );
    assert_eq!(a.dimensions(), b.dimensions());
    assert_ne!(a.as_raw(), b.as_raw());
}

#[test]
fn models_by_name_from_the_models_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    copy_bundle("sr_x4", &models.join("tiny_x4"));
    let env = [("DIFFIR_MODELS_DIR", s(&models))];
    let o = diffir(&["models"], &env);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(text.contains("built-in  diffir-x4-small"), "{text}");
    assert!(text.contains("tiny_x4   sr x4, precisions fp32/fp16"), "{text}");
    let out = tmp.path().join("o.png");
    let o = diffir(
        &[
            "restore",
            &input("sr_x4"),
            "-o",
            s(&out),
            "-n",
            "tiny_x4",
            "--backend",
            "tract",
        ],
        &env,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = diffir(
        &["restore", &input("sr_x4"), "-o", s(&out), "-n", "nope", "--overwrite"],
        &env,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no model of that name") && stderr(&o).contains("diffir models"),
        "{}",
        stderr(&o)
    );
}

/// `diffir restore - -o OUTPUT` (sr_x4, tract) with `stdin` as standard input.
fn restore_stdin(stdin: &[u8], output: &str, extra: &[&str]) -> std::process::Output {
    use std::io::Write;
    let bundle = bundles_dir().join("sr_x4");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_diffir"))
        .args([
            "restore",
            "-",
            "-o",
            output,
            "--model",
            s(&bundle),
            "--backend",
            "tract",
        ])
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// `diffir restore - -o - ...`: standard input to standard output.
fn restore_pipe(stdin: &[u8], extra: &[&str]) -> std::process::Output {
    restore_stdin(stdin, "-", extra)
}

#[test]
fn pipes_read_stdin_and_write_stdout_the_same_bytes_as_files() {
    let tmp = tempfile::tempdir().unwrap();
    let file_out = tmp.path().join("out.png");
    let o = restore_sr_x4(&file_out, &[], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = restore_pipe(&std::fs::read(input("sr_x4")).unwrap(), &["--format", "png"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Only the image on stdout.
    assert_eq!(o.stdout, std::fs::read(&file_out).unwrap());
    // stdin to a file, and a file to stdout.
    let from_stdin = tmp.path().join("from_stdin.png");
    let o = restore_stdin(&std::fs::read(input("sr_x4")).unwrap(), s(&from_stdin), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(std::fs::read(&from_stdin).unwrap(), std::fs::read(&file_out).unwrap());
}

#[test]
fn pipes_need_a_format_one_image_and_a_decodable_stdin() {
    let png = std::fs::read(input("sr_x4")).unwrap();
    // A usage error (exit 2): stdout needs a format.
    let o = restore_pipe(&png, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--format"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    // An input that fails (exit 1), named <stdin>.
    let o = restore_pipe(b"not an image", &["--format", "png"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("<stdin>"), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    let o = restore_pipe(b"", &["--format", "jpg"]);
    assert!(stderr(&o).contains("empty"), "{}", stderr(&o));
    let o = diffir(&["restore", "-", &input("sr_x4"), "-o", "-", "-f", "png"], &[]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("exactly one input"), "{}", stderr(&o));
}

/// `bench --op-profile` times every operator of tract's backbone plan; other backends are refused.
#[test]
fn bench_op_profile_lists_tracts_operators() {
    let bundle = bundles_dir().join("sr_x4");
    let o = diffir(
        &[
            "bench",
            "--model",
            s(&bundle),
            "--backend",
            "tract",
            "--op-profile",
            "--size",
            "16x24",
            "--tile",
            "0",
            "--runs",
            "1",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("tract backbone plan on 1x3x16x24"), "{text}");
    // Rows: operator, nodes, ms, share; the shares add up to 100 %.
    let rows: Vec<(String, usize, f64)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let share = f.last()?.strip_suffix('%')?.parse::<f64>().ok()?;
            Some((f[0].to_string(), f[f.len() - 3].parse().ok()?, share))
        })
        .collect();
    assert!(rows.len() > 5, "{text}");
    let total: f64 = rows.iter().map(|r| r.2).sum();
    assert!((total - 100.0).abs() < 1.0, "shares add up to {total}: {text}");
    assert!(rows.iter().any(|r| r.0.contains("MatMul") && r.1 > 0), "{text}");
    let o = diffir(
        &[
            "bench",
            "--model",
            s(&bundle),
            "--backend",
            "ort-cpu",
            "--op-profile",
            "--size",
            "16x16",
        ],
        &[],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("--backend tract"),
        "{}",
        stderr(&o)
    );
}
