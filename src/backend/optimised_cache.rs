//! onnxruntime's optimised CPU graphs, cached on disk and keyed the way TensorRT engines are, so that a
//! start loads a graph instead of optimising it again (time to the first image).
//!
//! onnxruntime's full optimisation rewrites the graph for the CPU it runs on (NCHWc layouts sized to the
//! vector width), so the key holds the CPU's model and feature flags besides the graph's SHA-256, the fixed
//! input shape and the onnxruntime version. Entries are written to a temporary file and renamed into place,
//! so concurrent starts never see half a file; an entry that does not load is optimised again.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::digest::{hex, sha256_hex};

/// What an optimised graph depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptimisedKey {
    /// SHA-256 of the ONNX graph's bytes.
    pub graph_sha256: String,
    /// The fixed (batch, height, width) the graph is planned for, e.g. "1x128x128", or "any".
    pub shape: String,
    /// The CPU: its model name and a SHA-256 of its feature flags.
    pub cpu: String,
    /// The onnxruntime version.
    pub onnxruntime: String,
}

impl OptimisedKey {
    /// The key of `graph` optimised for `shape` on this machine's CPU by onnxruntime `version`.
    pub fn new(graph: &[u8], shape: Option<(usize, usize, usize)>, onnxruntime: &str) -> Self {
        OptimisedKey {
            graph_sha256: sha256_hex(graph),
            shape: shape.map_or_else(|| "any".into(), |(n, h, w)| format!("{n}x{h}x{w}")),
            cpu: cpu_identity(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default()),
            onnxruntime: onnxruntime.into(),
        }
    }

    /// The cache file under `root` (a folder name from the first 16 bytes of a SHA-256 over every field).
    pub fn path(&self, root: &Path) -> PathBuf {
        let mut h = Sha256::new();
        for field in [&self.graph_sha256, &self.shape, &self.cpu, &self.onnxruntime] {
            h.update((field.len() as u64).to_le_bytes());
            h.update(field.as_bytes());
        }
        root.join("ort-cpu")
            .join(hex(&h.finalize()[..16]))
            .join("optimised.onnx")
    }
}

/// "MODEL NAME, flags SHA" from /proc/cpuinfo's first processor; "unknown" parts where it says nothing.
pub fn cpu_identity(cpuinfo: &str) -> String {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let model = field("model name").unwrap_or_else(|| "unknown".into());
    let flags = field("flags").map_or_else(|| "unknown".into(), |f| hex(&Sha256::digest(f.as_bytes())[..8]));
    format!("{model}, flags {flags}")
}

static DISK_CACHE_OFF: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Neither read nor write the disk cache (optimised graphs, TensorRT engines) in this process
/// (`--no-cache`, for read-only deployments): every start optimises again.
pub fn disable_disk_cache() {
    DISK_CACHE_OFF.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the disk cache is in use (not `--no-cache`).
pub fn disk_cache_on() -> bool {
    !DISK_CACHE_OFF.load(std::sync::atomic::Ordering::Relaxed)
}

/// The bytes at `path`, if a cached graph is there (and the cache is on).
pub fn read(path: &Path) -> Option<Vec<u8>> {
    if !disk_cache_on() {
        return None;
    }
    std::fs::read(path).ok().filter(|b| !b.is_empty())
}

/// Store `bytes` at `path` atomically (a temporary file in the same folder, renamed). Err: why not (the
/// cache is off, or the folder cannot be written).
pub fn store(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if !disk_cache_on() {
        return Err("the disk cache is off (--no-cache)".into());
    }
    let dir = path.parent().ok_or("cache path has no folder")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    tmp.write_all(bytes)
        .map_err(|e| format!("{}: {e}", tmp.path().display()))?;
    tmp.persist(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_graphs_shapes_cpus_and_versions() {
        let a = OptimisedKey::new(b"graph", Some((1, 128, 128)), "1.31.1");
        let root = Path::new("/c");
        let p = a.path(root);
        assert!(
            p.starts_with("/c/ort-cpu") && p.ends_with("optimised.onnx"),
            "{}",
            p.display()
        );
        assert_eq!(a.shape, "1x128x128");
        assert_eq!(OptimisedKey::new(b"graph", Some((1, 128, 128)), "1.31.1").path(root), p);
        for other in [
            OptimisedKey::new(b"graph2", Some((1, 128, 128)), "1.31.1"),
            OptimisedKey::new(b"graph", None, "1.31.1"),
            OptimisedKey::new(b"graph", Some((1, 128, 128)), "1.32.0"),
            OptimisedKey {
                cpu: "another cpu".into(),
                ..a.clone()
            },
        ] {
            assert_ne!(other.path(root), p, "{other:?}");
        }
    }

    #[test]
    fn cpu_identity_reads_model_and_flags() {
        let info = "processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu avx2 avx512f\n\nprocessor\t: 1\n";
        let id = cpu_identity(info);
        assert!(id.starts_with("AMD EPYC 9B14, flags "), "{id}");
        assert_ne!(id, cpu_identity(&info.replace("avx512f", "")));
        assert_eq!(cpu_identity(""), "unknown, flags unknown");
    }

    #[test]
    fn store_is_atomic_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/optimised.onnx");
        assert_eq!(read(&path), None);
        store(&path, b"bytes").unwrap();
        assert_eq!(read(&path).unwrap(), b"bytes");
        store(&path, b"new").unwrap();
        assert_eq!(read(&path).unwrap(), b"new");
        // Only the file: no temporary left behind.
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }
}
