//! Shared helpers: fixture paths, .npz access, running the CLI.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ndarray::{ArrayD, IxDyn, OwnedRepr};
use ndarray_npy::NpzReader;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bundles_dir() -> PathBuf {
    repo().join("tests/fixtures/bundles")
}

pub const BUNDLES: [&str; 5] = ["sr_x4", "sr_x2", "sr_x1", "deblur", "inpaint"];

/// The official fixtures folder, or None (with a note on stderr) where ../shared is absent. Under CI=true a
/// missing folder is a failure, never a silent pass.
pub fn official_dir() -> Option<PathBuf> {
    needed(
        &repo().join("../shared/fixtures/official"),
        "official fixtures",
        "../shared is absent here",
    )
}

/// `path` where it exists; else None with a note on stderr that says what is missing and `why`, and under
/// CI=true a failure, never a silent pass.
pub fn needed(path: &Path, what: &str, why: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path.to_path_buf());
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} not found at {} and CI=true: the test cannot run",
        path.display()
    );
    eprintln!("skipped: {what} not found at {} ({why})", path.display());
    None
}

pub struct Npz(NpzReader<File>);

impl Npz {
    pub fn open(path: &Path) -> Npz {
        Npz(NpzReader::new(File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap())
    }
    pub fn has(&mut self, name: &str) -> bool {
        self.0
            .names()
            .unwrap()
            .iter()
            .any(|n| n == name || n == &format!("{name}.npy"))
    }
    pub fn f32(&mut self, name: &str) -> ArrayD<f32> {
        self.0
            .by_name::<OwnedRepr<f32>, IxDyn>(&format!("{name}.npy"))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }
    pub fn u8(&mut self, name: &str) -> ArrayD<u8> {
        self.0
            .by_name::<OwnedRepr<u8>, IxDyn>(&format!("{name}.npy"))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }
}

/// PSNR in dB of two float images in [0, 1] (peak 1); identical images give a large finite number.
pub fn psnr(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let mse = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>() / a.len() as f64;
    10.0 * (1.0 / mse.max(1e-20)).log10()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Run the `diffir` binary.
pub fn diffir(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_diffir"));
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("run diffir")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Copy a bundle folder (the graphs and bundle.yaml) into `dst`.
/// Copy fixture bundle `name` (bundle.yaml and every graph) to `dst`, and check that the copy loads, so that
/// a test that then breaks it fails for its own reason.
pub fn copy_bundle(name: &str, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for f in std::fs::read_dir(bundles_dir().join(name)).unwrap() {
        let f = f.unwrap().path();
        if f.file_name().unwrap() == "bundle.yaml" || f.extension().is_some_and(|e| e == "onnx") {
            std::fs::copy(&f, dst.join(f.file_name().unwrap())).unwrap();
        }
    }
    diffir::Bundle::load(dst).expect("an intact copy of the bundle loads");
}

/// `diffir restore INPUT -o OUT` with the sr_x4 fixture bundle on tract, plus `extra` arguments.
pub fn restore_on_tract(input: &Path, out: &Path, extra: &[&str]) -> Output {
    let bundle = bundles_dir().join("sr_x4");
    let mut args = vec![
        "restore",
        s(input),
        "-o",
        s(out),
        "--model",
        s(&bundle),
        "--backend",
        "tract",
    ];
    args.extend_from_slice(extra);
    diffir(&args, &[])
}

/// A deterministic photo-like test image (samples/chelsea.png, subsampled and wrapped).
pub fn photo(h: usize, w: usize) -> diffir::Image {
    let img = image::open(repo().join("samples/chelsea.png")).unwrap().into_rgb8();
    let mut data = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        for x in 0..w {
            let p = img.get_pixel(
                (x * 3 % img.width() as usize) as u32,
                (y * 3 % img.height() as usize) as u32,
            );
            data.extend(p.0.iter().map(|&v| v as f32 / 255.0));
        }
    }
    diffir::Image::new(h, w, data).unwrap()
}

/// A committed test bundle.
pub fn load(name: &str) -> diffir::Bundle {
    diffir::Bundle::load(bundles_dir().join(name)).unwrap()
}

/// A striped mask where `bundle` inpaints, else None.
pub fn mask_for(bundle: &diffir::Bundle, h: usize, w: usize) -> Option<diffir::Mask> {
    (bundle.task() == diffir::Task::Inpaint).then(|| {
        let data = (0..h * w).map(|i| ((i / w) % 7 < 2) as u8 as f32).collect();
        diffir::Mask::new(h, w, data).unwrap()
    })
}

/// The tolerance tiers, named once (max |difference| of values in [0, 1] unless a name says otherwise).
pub mod tol {
    /// The same graphs on the same engine, differing only in batching, order or scheduling (float rounding).
    pub const EXACT: f32 = 1e-6;
    /// The same graphs by another route: a remote server, CPEN in windows vs whole.
    pub const CLOSE: f32 = 1e-5;
    /// A bundle against the Python reference run of the same graphs.
    pub const REFERENCE: f32 = 2e-5;
    /// Exported graphs against the official PyTorch code.
    pub const OFFICIAL: f32 = 5e-5;
    /// Two engines (tract vs onnxruntime), or a graph against its rewrite.
    pub const ENGINES: f32 = 1e-4;
    /// An fp16 backbone against fp32.
    pub const FP16: f32 = 2e-3;
    /// The PSNR floor of an fp16 backbone against fp32, in dB.
    pub const FP16_MIN_PSNR_DB: f64 = 60.0;
}
