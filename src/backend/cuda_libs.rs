//! The CUDA 13 and cuDNN 9 libraries onnxruntime-gpu's CUDA provider needs, found and loaded before the
//! provider is. `pip install onnxruntime-gpu[cuda,cudnn]==1.31.1` puts them beside the onnxruntime package
//! (site-packages/nvidia/cu13/lib, site-packages/nvidia/cudnn/lib), where the dynamic loader does not look;
//! without this, only an `LD_LIBRARY_PATH` set by hand made the provider load. A library loaded by its
//! full path is found by its soname when the provider asks for it, so loading them first is enough.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The libraries, in the order they are loaded (each after what it needs), and whether the CUDA provider
/// cannot run without them. The first four are the provider's own dependencies (its ELF `NEEDED`
/// entries); it loads cuDNN itself for every convolution; cuFFT and NVRTC only some operators use.
pub const LIBRARIES: [(&str, bool); 7] = [
    ("libcudart.so.13", true),
    ("libcublasLt.so.13", true),
    ("libcublas.so.13", true),
    ("libcurand.so.10", true),
    ("libcudnn.so.9", true),
    ("libcufft.so.12", false),
    ("libnvrtc.so.13", false),
];

/// The NVIDIA driver's library, which comes with the driver, never from pip.
pub const DRIVER: &str = "libcuda.so.1";

/// The variable naming folders (':'-separated) to take the libraries from before any other.
pub const ENV: &str = "DIFFIR_CUDA_LIBS";

/// How to get the libraries, for messages.
pub const HINT: &str = "install them beside onnxruntime-gpu with `pip install 'onnxruntime-gpu[cuda,cudnn]==1.31.1'`, \
or set DIFFIR_CUDA_LIBS to the folders that hold them";

/// Where one library came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Loaded from this file.
    Loaded(PathBuf),
    /// Not in the folders searched, but the system's loader has it (LD_LIBRARY_PATH, ldconfig).
    System,
    /// Found in none of the folders, nor by the system's loader.
    Missing,
    /// This file is there but did not load (the loader's words).
    Failed(PathBuf, String),
}

/// The outcome of loading the libraries: one entry per library of [`LIBRARIES`], then the driver's.
#[derive(Debug, Clone)]
pub struct Report {
    /// The folders searched, in order.
    pub searched: Vec<PathBuf>,
    /// Each library and where it came from.
    pub libraries: Vec<(&'static str, Found)>,
}

impl Report {
    /// The libraries the provider cannot run without that are missing or failed to load.
    pub fn missing(&self) -> Vec<&'static str> {
        self.libraries
            .iter()
            .filter(|(name, found)| {
                let required = *name == DRIVER || LIBRARIES.iter().any(|(n, r)| n == name && *r);
                required && matches!(found, Found::Missing | Found::Failed(..))
            })
            .map(|(name, _)| *name)
            .collect()
    }

    /// Why the CUDA provider cannot run with these libraries, in one line (what to install, or the missing
    /// driver); None when every library it needs loaded.
    pub fn unusable(&self) -> Option<String> {
        let (driver, libs): (Vec<&str>, Vec<&str>) = self.missing().into_iter().partition(|&m| m == DRIVER);
        let mut why = vec![];
        if !libs.is_empty() {
            why.push(format!("{} not found ({HINT})", libs.join(", ")));
        }
        if !driver.is_empty() {
            why.push(format!(
                "{DRIVER} not found: no NVIDIA driver here (in a container, hand the GPU in: docker run --gpus all)"
            ));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }

    /// One line per library: `cuda library:  NAME from PATH` (or why not), for `diffir info`.
    pub fn lines(&self) -> Vec<String> {
        self.libraries
            .iter()
            .map(|(name, found)| {
                let what = match found {
                    Found::Loaded(p) => format!("from {}", p.display()),
                    Found::System => "from the system's library path".into(),
                    Found::Missing if *name == DRIVER => "not found (no NVIDIA driver on this machine)".into(),
                    Found::Missing => format!("not found (searched {})", self.searched_list()),
                    Found::Failed(p, e) => format!("{} did not load: {e}", p.display()),
                };
                format!("cuda library:   {name} {what}")
            })
            .collect()
    }

    fn searched_list(&self) -> String {
        if self.searched.is_empty() {
            return "no folder: set DIFFIR_CUDA_LIBS".into();
        }
        self.searched
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The folders to search for the onnxruntime library at `ort_library`: `$DIFFIR_CUDA_LIBS`, then every
/// `nvidia/*/lib` of the site-packages that holds it (…/site-packages/onnxruntime/capi/libonnxruntime.so),
/// then its own folder and the `nvidia/*/lib` beside it (an install folder laid out the same way).
pub fn search_dirs(ort_library: Option<&Path>, env: Option<&std::ffi::OsStr>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = env.map(|v| std::env::split_paths(v).collect()).unwrap_or_default();
    out.retain(|p| !p.as_os_str().is_empty());
    let nvidia_libs = |root: &Path| -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("nvidia"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path().join("lib"))
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        dirs.sort();
        dirs
    };
    if let Some(dir) = ort_library.and_then(Path::parent) {
        // …/site-packages/onnxruntime/capi → …/site-packages
        if let Some(site) = dir.parent().and_then(Path::parent) {
            out.extend(nvidia_libs(site));
        }
        out.push(dir.to_path_buf());
        out.extend(nvidia_libs(dir));
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    out
}

/// Load the libraries from `dirs` (in [`LIBRARIES`]' order), then check the driver's. Each stays loaded for
/// the life of the process.
pub fn load_from(dirs: &[PathBuf]) -> Report {
    let mut libraries = vec![];
    for (name, _) in LIBRARIES {
        let found = match dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
            Some(path) => match open(path.as_os_str()) {
                Ok(()) => Found::Loaded(path),
                Err(e) => Found::Failed(path, e),
            },
            None if open(std::ffi::OsStr::new(name)).is_ok() => Found::System,
            None => Found::Missing,
        };
        libraries.push((name, found));
    }
    let driver = match open(std::ffi::OsStr::new(DRIVER)) {
        Ok(()) => Found::System,
        Err(_) => Found::Missing,
    };
    libraries.push((DRIVER, driver));
    Report {
        searched: dirs.to_vec(),
        libraries,
    }
}

/// dlopen with RTLD_NOW | RTLD_GLOBAL, never closed.
fn open(name: &std::ffi::OsStr) -> Result<(), String> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: loading a shared library runs its initialisers; these are NVIDIA's CUDA libraries (or what
    // the user named as such), loaded exactly as the CUDA provider itself would load them.
    match unsafe { Library::open(Some(name), RTLD_NOW | RTLD_GLOBAL) } {
        Ok(lib) => {
            std::mem::forget(lib);
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

static LOADED: OnceLock<Report> = OnceLock::new();

/// Load the libraries for the onnxruntime library at `ort_library`, once per process (before the CUDA
/// provider is first used); later calls return the first outcome.
pub fn preload(ort_library: &Path) -> &'static Report {
    LOADED.get_or_init(|| load_from(&search_dirs(Some(ort_library), std::env::var_os(ENV).as_deref())))
}

/// The outcome of [`preload`], if it ran.
pub fn report() -> Option<&'static Report> {
    LOADED.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_come_from_the_variable_then_the_site_packages() {
        let tmp = tempfile::tempdir().unwrap();
        let site = tmp.path().join("venv/lib/python3.11/site-packages");
        let capi = site.join("onnxruntime/capi");
        for d in ["nvidia/cu13/lib", "nvidia/cudnn/lib", "nvidia/nolib"] {
            std::fs::create_dir_all(site.join(d)).unwrap();
        }
        std::fs::create_dir_all(&capi).unwrap();
        let lib = capi.join("libonnxruntime.so.1.31.1");
        let extra = tmp.path().join("extra");
        let env = std::env::join_paths([&extra, &tmp.path().join("more")]).unwrap();
        let dirs = search_dirs(Some(&lib), Some(&env));
        assert_eq!(
            dirs,
            [
                extra,
                tmp.path().join("more"),
                site.join("nvidia/cu13/lib"),
                site.join("nvidia/cudnn/lib"),
                capi.clone(),
            ]
        );
        assert_eq!(search_dirs(None, None), Vec::<PathBuf>::new());
    }

    #[test]
    fn a_missing_library_is_named_and_a_broken_one_says_why() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("libcudart.so.13"), b"not a library").unwrap();
        let report = load_from(&[tmp.path().to_path_buf()]);
        assert_eq!(report.libraries.len(), LIBRARIES.len() + 1);
        match &report.libraries[0].1 {
            Found::Failed(p, why) => {
                assert_eq!(p, &tmp.path().join("libcudart.so.13"));
                assert!(!why.is_empty());
            }
            other => panic!("{other:?}"),
        }
        // On a machine without CUDA every required library is missing, each named.
        if !Path::new("/dev/nvidia0").exists() {
            let missing = report.missing();
            for name in ["libcudart.so.13", "libcublasLt.so.13", "libcudnn.so.9", DRIVER] {
                assert!(missing.contains(&name), "{missing:?}");
            }
            assert!(!missing.contains(&"libcufft.so.12"), "optional: {missing:?}");
            let lines = report.lines();
            assert!(lines[1].contains("libcublasLt.so.13 not found (searched"), "{lines:?}");
            assert!(lines.last().unwrap().contains("no NVIDIA driver"), "{lines:?}");
            let why = report.unusable().unwrap();
            assert!(
                why.contains("libcublasLt.so.13") && why.contains("no NVIDIA driver here"),
                "{why}"
            );
        }
    }
}
