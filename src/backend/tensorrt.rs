//! TensorRT engine and timing caches: where they live and the key that keeps them from going stale.
//!
//! An engine is only valid for one model, input shape, precision, GPU model and TensorRT version; the cache
//! folder name hashes all of them, so a change in any of them builds a fresh engine instead of loading a
//! wrong one.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::digest::{hex, sha256_hex};

/// Everything an engine depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// SHA-256 of the ONNX graph's bytes.
    pub graph_sha256: String,
    /// The optimisation profile, e.g. "image:1x3x256x256,ipr:1x64" (min = opt = max).
    pub profile: String,
    /// "fp32" or "fp16".
    pub precision: String,
    /// GPU model, e.g. "NVIDIA H200".
    pub gpu: String,
    /// TensorRT library version, e.g. "10.13.0".
    pub tensorrt: String,
    /// onnxruntime version.
    pub onnxruntime: String,
}

impl CacheKey {
    /// The key of one engine: the graph's bytes, the profile, precision, GPU and library versions.
    pub fn new(graph: &[u8], profile: &str, fp16: bool, gpu: &str, tensorrt: &str, onnxruntime: &str) -> Self {
        CacheKey {
            graph_sha256: sha256_hex(graph),
            profile: profile.into(),
            precision: if fp16 { "fp16" } else { "fp32" }.into(),
            gpu: gpu.into(),
            tensorrt: tensorrt.into(),
            onnxruntime: onnxruntime.into(),
        }
    }

    /// A folder name unique to this key (first 16 bytes of a SHA-256 over every field).
    pub fn folder_name(&self) -> String {
        let mut h = Sha256::new();
        for field in [
            &self.graph_sha256,
            &self.profile,
            &self.precision,
            &self.gpu,
            &self.tensorrt,
            &self.onnxruntime,
        ] {
            h.update((field.len() as u64).to_le_bytes());
            h.update(field.as_bytes());
        }
        hex(&h.finalize()[..16])
    }

    /// The cache folder under `root`.
    pub fn dir(&self, root: &Path) -> PathBuf {
        root.join("tensorrt").join(self.folder_name())
    }
}

/// The cache root: `$DIFFIR_CACHE_DIR`, else `$XDG_CACHE_HOME/diffir`, else `~/.cache/diffir`.
pub fn cache_root() -> PathBuf {
    cache_root_from(|k| std::env::var_os(k))
}

/// `cache_root` with the environment given as a lookup (empty values count as unset).
fn cache_root_from(env: impl Fn(&str) -> Option<std::ffi::OsString>) -> PathBuf {
    let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("DIFFIR_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|p| p.join("diffir")))
        .or_else(|| var("HOME").map(|p| p.join(".cache/diffir")))
        .unwrap_or_else(|| PathBuf::from(".diffir-cache"))
}

/// TensorRT's version from the `libnvinfer.so.X.Y.Z` found in the library path ("unknown" if none).
pub fn tensorrt_version() -> String {
    let mut dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/lib/x86_64-linux-gnu", "/usr/local/lib", "/usr/lib"].map(PathBuf::from));
    tensorrt_version_in(&dirs)
}

pub(crate) fn tensorrt_version_in(dirs: &[PathBuf]) -> String {
    let mut best: Option<String> = None;
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(v) = name.strip_prefix("libnvinfer.so.") {
                if best.as_ref().is_none_or(|b| v.len() > b.len()) {
                    best = Some(v.to_string());
                }
            }
        }
    }
    best.unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CacheKey {
        CacheKey::new(
            b"graph",
            "image:1x3x256x256,ipr:1x64",
            false,
            "NVIDIA H200",
            "10.13.0",
            "1.31.1",
        )
    }

    #[test]
    fn every_field_changes_the_folder() {
        let base = key().folder_name();
        assert_eq!(base, key().folder_name(), "stable");
        assert_eq!(base.len(), 32);
        let graph = CacheKey::new(
            b"graph2",
            &key().profile,
            false,
            &key().gpu,
            &key().tensorrt,
            &key().onnxruntime,
        );
        let variants = [
            graph,
            CacheKey {
                profile: "image:1x3x128x128,ipr:1x64".into(),
                ..key()
            },
            CacheKey {
                precision: "fp16".into(),
                ..key()
            },
            CacheKey {
                gpu: "NVIDIA H100".into(),
                ..key()
            },
            CacheKey {
                tensorrt: "10.14.1".into(),
                ..key()
            },
            CacheKey {
                onnxruntime: "1.32.0".into(),
                ..key()
            },
        ];
        let mut seen = std::collections::HashSet::from([base]);
        for v in variants {
            assert!(seen.insert(v.folder_name()), "{v:?} collides");
        }
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let a = CacheKey::new(b"g", "ab", false, "c", "d", "e");
        let mut b = a.clone();
        b.profile = "a".into();
        b.gpu = "bc".into();
        assert_ne!(a.folder_name(), b.folder_name());
    }

    #[test]
    fn tensorrt_discovery() {
        let tmp = tempfile::tempdir().unwrap();
        let libs = tmp.path().join("lib");
        std::fs::create_dir_all(&libs).unwrap();
        for f in [
            "libnvinfer.so",
            "libnvinfer.so.10",
            "libnvinfer.so.10.13.0",
            "libother.so.1",
        ] {
            std::fs::write(libs.join(f), b"").unwrap();
        }
        assert_eq!(tensorrt_version_in(&[libs]), "10.13.0");
        assert_eq!(tensorrt_version_in(&[]), "unknown");
    }

    #[test]
    fn cache_root_honours_overrides() {
        fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<std::ffi::OsString> + 'a {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        }
        let all = [("DIFFIR_CACHE_DIR", "/d"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(cache_root_from(env(&all)), Path::new("/d"));
        assert_eq!(cache_root_from(env(&all[1..])), Path::new("/x/diffir"));
        assert_eq!(cache_root_from(env(&all[2..])), Path::new("/h/.cache/diffir"));
        // Empty values count as unset.
        let empty = [("DIFFIR_CACHE_DIR", ""), ("XDG_CACHE_HOME", ""), ("HOME", "/h")];
        assert_eq!(cache_root_from(env(&empty)), Path::new("/h/.cache/diffir"));
        assert_eq!(cache_root_from(env(&[])), Path::new(".diffir-cache"));
        // The folder layout under a root.
        let dir = key().dir(Path::new("/tmp/c"));
        assert!(dir.starts_with("/tmp/c/tensorrt"));
        assert_eq!(dir.file_name().unwrap().len(), 32);
    }
}
