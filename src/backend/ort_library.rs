//! Finding and loading the onnxruntime library (once per process), its version, and the hints that say how
//! to install it: what the engine and the plugin providers both need, so neither imports the other for it.

use std::path::PathBuf;
use std::sync::OnceLock;

use ort::environment::Environment;

use crate::error::{Error, Result};

/// onnxruntime version the runtime is built and tested against.
pub const ORT_VERSION: &str = "1.31.1";
pub(crate) const LIB_NAME: &str = "libonnxruntime.so.1.31.1";

/// How to install the library, appended to every "not found" message.
pub const INSTALL_HINT: &str = "install it with scripts/install-onnxruntime.sh (onnxruntime 1.31.1 from PyPI) \
or set ORT_DYLIB_PATH to libonnxruntime.so";
/// How to get the GPU providers (CUDA, TensorRT): the CPU package above does not have them.
pub const GPU_INSTALL_HINT: &str =
    "the GPU providers come with onnxruntime-gpu: `pip install onnxruntime-gpu==1.31.1` \
(CUDA 13, cuDNN 9), then set ORT_DYLIB_PATH to its onnxruntime/capi/libonnxruntime.so.1.31.1";

/// The library an embedding program named ([`prefer_library`]), looked at after `ORT_DYLIB_PATH`.
static PREFERRED: OnceLock<PathBuf> = OnceLock::new();

/// Look for the onnxruntime library at `path` first, after only `ORT_DYLIB_PATH` (the Python package names
/// the onnxruntime wheel's own library here). It counts until the library is loaded: an error once a
/// library is loaded or another path was named.
pub fn prefer_library(path: &std::path::Path) -> Result<()> {
    if let Some(loaded) = library_path() {
        if loaded != path {
            return Err(Error::Backend(format!(
                "onnxruntime is already loaded from {}; {} cannot be used in this process",
                loaded.display(),
                path.display()
            )));
        }
    }
    let set = PREFERRED.get_or_init(|| path.to_path_buf());
    if set != path {
        return Err(Error::Backend(format!(
            "the onnxruntime library was already set to {}, not {}",
            set.display(),
            path.display()
        )));
    }
    Ok(())
}

/// Where the runtime looks for the onnxruntime library, in order.
pub fn library_candidates() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(p)];
    }
    let mut out: Vec<PathBuf> = PREFERRED.get().cloned().into_iter().collect();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|p| p.to_path_buf()))
    {
        out.push(dir.join(LIB_NAME));
        out.push(dir.join("lib").join(LIB_NAME));
    }
    out.push(install_dir().join(LIB_NAME));
    out.push(PathBuf::from(LIB_NAME));
    out.push(PathBuf::from("libonnxruntime.so"));
    out
}

/// The folder scripts/install-onnxruntime.sh installs into.
pub fn install_dir() -> PathBuf {
    crate::models::data_folder("DIFFIR_ORT_DIR", "onnxruntime")
}

/// The loaded library and its environment.
pub struct Runtime {
    /// The onnxruntime environment every session is built in.
    pub env: Environment,
    /// The library file.
    pub path: PathBuf,
    /// The version the loaded library reports.
    pub version: String,
}

/// The version the library at `path` reports (`OrtGetApiBase()->GetVersionString()`). The library is
/// already loaded by then; opening it again only takes another reference.
fn reported_version(path: &std::path::Path) -> Option<String> {
    // SAFETY: the same library onnxruntime's bindings just loaded; OrtGetApiBase has this signature in every
    // onnxruntime release, and the returned string is static inside the library.
    unsafe {
        let lib = libloading::Library::new(path).ok()?;
        let get: libloading::Symbol<unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
            lib.get(b"OrtGetApiBase").ok()?;
        let base = get();
        if base.is_null() {
            return None;
        }
        let s = ((*base).GetVersionString)();
        (!s.is_null()).then(|| std::ffi::CStr::from_ptr(s).to_string_lossy().into_owned())
    }
}

/// The onnxruntime library this process loaded, once it is loaded.
pub fn library_path() -> Option<PathBuf> {
    RUNTIME.get()?.as_ref().ok().map(|rt| rt.path.clone())
}

/// The loaded library's version, and a warning when it is not the one this runtime is built for.
pub fn library_version() -> Option<(String, Option<String>)> {
    let rt = RUNTIME.get()?.as_ref().ok()?;
    let warning = (rt.version != ORT_VERSION).then(|| {
        format!(
            "warning: {} reports onnxruntime {}; this runtime is built and tested for {ORT_VERSION}",
            rt.path.display(),
            rt.version
        )
    });
    Some((rt.version.clone(), warning))
}

static RUNTIME: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();

/// Load the library once per process; later calls return the same outcome.
pub fn runtime() -> Result<&'static Runtime> {
    let r = RUNTIME.get_or_init(|| {
        // onnxruntime's Linux telemetry keeps a device id and an event database under
        // ~/.cache/Microsoft unless this is set (with_telemetry(false) below does not stop that).
        if std::env::var_os("ORT_DISABLE_TELEMETRY").is_none() {
            std::env::set_var("ORT_DISABLE_TELEMETRY", "1");
        }
        let mut tried = vec![];
        for path in library_candidates() {
            let is_bare_name = path.components().count() == 1;
            if !is_bare_name && !path.exists() {
                tried.push(format!("{} (absent)", path.display()));
                continue;
            }
            match ort::init_from(&path) {
                Ok(builder) => {
                    return builder
                        .with_name("diffir")
                        .with_telemetry(false)
                        .build()
                        .map(|env| Runtime {
                            env,
                            path: path.clone(),
                            version: reported_version(&path).unwrap_or_else(|| "(version not reported)".into()),
                        })
                        .map_err(|e| format!("{}: cannot create the environment: {e}", path.display()));
                }
                Err(e) => tried.push(format!("{} ({e})", path.display())),
            }
        }
        Err(format!(
            "onnxruntime library not found or unusable; tried {}. {INSTALL_HINT}",
            tried.join(", ")
        ))
    });
    r.as_ref().map_err(|e| Error::Backend(e.clone()))
}

/// Load the library (once per process). The error says where it was looked for and how to install it; for
/// `gpu` the hint names the GPU package.
pub fn load(gpu: bool) -> Result<()> {
    runtime().map(|_| ()).map_err(|e| match e {
        Error::Backend(msg) if gpu => Error::Backend(msg.replace(INSTALL_HINT, GPU_INSTALL_HINT)),
        e => e,
    })
}
