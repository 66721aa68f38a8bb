//! onnxruntime backend through `ort`, with the shared library loaded at run time (never linked), so the
//! binary runs everywhere and uses onnxruntime where it is installed.
//!
//! The library is looked for, in order: `ORT_DYLIB_PATH` (only there, when set); next to the executable;
//! the install folder of `scripts/install-onnxruntime.sh` (`$DIFFIR_ORT_DIR`, default
//! `~/.local/share/diffir/onnxruntime`); the system's library path.

pub use super::ort_library::{
    install_dir, library_candidates, library_path, library_version, load, GPU_INSTALL_HINT, INSTALL_HINT, ORT_VERSION,
};

mod engine;
mod provider;
mod session;

pub use engine::OrtEngine;
pub use provider::{for_provider, provider_unavailable, Provider};
pub use session::{backbone_profile, fixed_shape, providers_used, wants_cuda_graph};

#[cfg(test)]
mod version_tests {
    use super::*;

    /// The version is pinned once, in the exporter's dependencies; the runtime must say the same.
    #[test]
    fn runtime_version_matches_the_pinned_package() {
        let pyproject = include_str!("../../../export/pyproject.toml");
        assert!(
            pyproject.contains(&format!("\"onnxruntime=={ORT_VERSION}\"")),
            "export/pyproject.toml must pin onnxruntime=={ORT_VERSION}"
        );
        assert!(crate::backend::ort_library::LIB_NAME.ends_with(ORT_VERSION));
    }
}
