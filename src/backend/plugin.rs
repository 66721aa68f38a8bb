//! Execution providers onnxruntime loads as plugin libraries (OpenVINO, WebGPU): where their libraries are
//! found, registering each once per process, and the devices they offer.
//!
//! A plugin's library is looked for, in order: the path given to [`register`] (`--ep-library`), then only
//! there; `$DIFFIR_OPENVINO_LIBRARY` / `$DIFFIR_WEBGPU_LIBRARY`, then only there; the install folder of
//! `scripts/install-onnxruntime.sh --openvino/--webgpu` (`$DIFFIR_ORT_DIR/<package>/`); the pip package in
//! `$VIRTUAL_ENV`; the pip package the `python3` on the path imports (`$PYTHON` when set).
//!
//! Plugin devices are only ever used when a session names them: every CPU session of this runtime selects
//! the CPU provider's device explicitly, so a registered plugin can never take it over through onnxruntime's
//! automatic device selection (crate::backend::ort).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::memory::DeviceType;

use crate::error::{Error, Result};

/// An execution provider that ships as an onnxruntime plugin library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Plugin {
    /// Intel's OpenVINO (`onnxruntime-ep-openvino` 1.8.1): Intel CPUs, GPUs and NPUs.
    OpenVino,
    /// WebGPU through Dawn (`onnxruntime-ep-webgpu` 0.4.0): GPUs through Vulkan, Metal or D3D12.
    WebGpu,
}

impl Plugin {
    /// Every plugin.
    pub const ALL: [Plugin; 2] = [Plugin::OpenVino, Plugin::WebGpu];

    /// The name the backend line prints.
    pub fn name(self) -> &'static str {
        match self {
            Plugin::OpenVino => "OpenVINO",
            Plugin::WebGpu => "WebGPU",
        }
    }

    /// The execution provider's name in onnxruntime (its devices' `ep`, the prefix of its options).
    pub fn ep_name(self) -> &'static str {
        match self {
            Plugin::OpenVino => "OpenVINOExecutionProvider",
            Plugin::WebGpu => "WebGpuExecutionProvider",
        }
    }

    /// The PyPI package, pinned.
    pub fn requirement(self) -> &'static str {
        match self {
            Plugin::OpenVino => "onnxruntime-ep-openvino==1.8.1",
            Plugin::WebGpu => "onnxruntime-ep-webgpu==0.4.0",
        }
    }

    /// The Python package folder the wheel installs (and the install script copies).
    pub fn package(self) -> &'static str {
        match self {
            Plugin::OpenVino => "onnxruntime_ep_openvino",
            Plugin::WebGpu => "onnxruntime_ep_webgpu",
        }
    }

    /// The plugin library's file name inside the package folder.
    pub fn library_file(self) -> &'static str {
        match self {
            Plugin::OpenVino => "libonnxruntime_providers_openvino_plugin.so",
            Plugin::WebGpu => "libonnxruntime_providers_webgpu.so",
        }
    }

    /// The environment variable naming the library.
    pub fn env_var(self) -> &'static str {
        match self {
            Plugin::OpenVino => "DIFFIR_OPENVINO_LIBRARY",
            Plugin::WebGpu => "DIFFIR_WEBGPU_LIBRARY",
        }
    }

    /// How to install the library.
    pub fn install_hint(self) -> String {
        let flag = match self {
            Plugin::OpenVino => "--openvino",
            Plugin::WebGpu => "--webgpu",
        };
        format!(
            "install it with scripts/install-onnxruntime.sh {flag} ({} from PyPI), or give its path with \
             --ep-library or ${}",
            self.requirement(),
            self.env_var()
        )
    }
}

/// Where the library of `plugin` is looked for, in order.
pub fn library_candidates(plugin: Plugin, explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    if let Some(p) = std::env::var_os(plugin.env_var()).filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(p)];
    }
    let mut out = vec![super::ort_library::install_dir()
        .join(plugin.package())
        .join(plugin.library_file())];
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").filter(|p| !p.is_empty()) {
        if let Ok(entries) = std::fs::read_dir(Path::new(&venv).join("lib")) {
            let mut found: Vec<PathBuf> = entries
                .flatten()
                .map(|e| {
                    e.path()
                        .join("site-packages")
                        .join(plugin.package())
                        .join(plugin.library_file())
                })
                .collect();
            found.sort();
            out.extend(found);
        }
    }
    if let Some(p) = python_package_library(plugin) {
        out.push(p);
    }
    out.dedup();
    out
}

/// The library of the pip package the Python on the path imports, if it has one.
fn python_package_library(plugin: Plugin) -> Option<PathBuf> {
    let python = std::env::var_os("PYTHON")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".into());
    let code = format!("import {} as m; print(m.get_library_path())", plugin.package());
    let out = std::process::Command::new(python)
        .args(["-c", &code])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?;
    let path = PathBuf::from(path.trim());
    (out.status.success() && path.is_file()).then_some(path)
}

/// Outcome of registering each plugin, once per process.
static REGISTERED: Mutex<Option<HashMap<Plugin, std::result::Result<PathBuf, String>>>> = Mutex::new(None);

/// Register `plugin`'s library with the process's onnxruntime environment (once; later calls return the
/// first outcome). `explicit`: the library's path (`--ep-library`); None: look in the usual places.
pub fn register(plugin: Plugin, explicit: Option<&Path>) -> Result<PathBuf> {
    let rt = super::ort_library::runtime()?;
    let mut guard = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    if let Some(done) = map.get(&plugin) {
        return done.clone().map_err(Error::Backend);
    }
    let mut tried = vec![];
    let mut outcome = Err(String::new());
    for path in library_candidates(plugin, explicit) {
        if !path.is_file() {
            tried.push(format!("{} (absent)", path.display()));
            continue;
        }
        match rt.env.register_ep_library(plugin.ep_name(), &path) {
            Ok(()) => {
                outcome = Ok(path);
                break;
            }
            Err(e) => tried.push(format!("{} ({e})", path.display())),
        }
    }
    if outcome.is_err() {
        outcome = Err(format!(
            "the {} plugin library was not found or did not load; tried {}. {}",
            plugin.name(),
            tried.join(", "),
            plugin.install_hint()
        ));
    }
    map.insert(plugin, outcome.clone());
    outcome.map_err(Error::Backend)
}

/// What onnxruntime offers here: each plugin (registered where its library is found), and the devices of
/// the CPU provider and the plugins that loaded. What `diffir info` lists.
#[derive(Debug)]
pub struct Survey {
    /// Each plugin: where it was loaded from (or why not), and why it cannot run with default options
    /// where it loaded but cannot.
    pub plugins: Vec<(Plugin, Result<PathBuf>, Option<String>)>,
    /// The devices offered, or why none are listed.
    pub devices: Result<Vec<PluginDevice>>,
}

/// Load onnxruntime and register every plugin whose library is found; an error where onnxruntime itself
/// cannot be loaded.
pub fn survey() -> Result<Survey> {
    super::ort_library::load(false)?;
    let plugins = Plugin::ALL
        .iter()
        .map(|&p| {
            let loaded = register(p, None);
            let why = loaded.as_ref().ok().and_then(|_| unavailable(p, &[]));
            (p, loaded, why)
        })
        .collect();
    Ok(Survey {
        plugins,
        devices: devices(),
    })
}

/// One device an execution provider offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDevice {
    /// The provider's name (`OpenVINOExecutionProvider`, `OpenVINOExecutionProvider.AUTO`, …).
    pub ep: String,
    /// cpu, gpu or npu.
    pub kind: &'static str,
    /// The hardware's vendor as onnxruntime reports it.
    pub vendor: String,
    /// The hardware's id.
    pub id: u32,
}

/// A hardware device type as `device=` names it: cpu, gpu, npu (other types: "other").
pub(crate) fn kind_name(t: DeviceType) -> &'static str {
    match t {
        DeviceType::CPU => "cpu",
        DeviceType::GPU => "gpu",
        DeviceType::NPU => "npu",
        _ => "other",
    }
}

/// Every device the process's onnxruntime environment offers (the CPU provider's and each registered
/// plugin's).
pub fn devices() -> Result<Vec<PluginDevice>> {
    let rt = super::ort_library::runtime()?;
    Ok(rt
        .env
        .devices()
        .map(|d| {
            let hw = d.hardware_device();
            PluginDevice {
                ep: d.ep().unwrap_or("?").to_string(),
                kind: kind_name(hw.ty()),
                vendor: hw.vendor().unwrap_or("?").to_string(),
                id: hw.id(),
            }
        })
        .collect())
}

/// The device kind a plugin session runs on: `device=cpu|gpu|npu` among the plugin options, else OpenVINO's
/// CPU and WebGPU's first device (None: any).
pub fn wanted_kind(plugin: Plugin, options: &[(String, String)]) -> Result<Option<&'static str>> {
    match options.iter().rev().find(|(k, _)| k == "device") {
        Some((_, v)) => match v.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Some("cpu")),
            "gpu" => Ok(Some("gpu")),
            "npu" => Ok(Some("npu")),
            _ => Err(Error::Backend(format!(
                "--ep-option device={v}: expected cpu, gpu or npu"
            ))),
        },
        None => Ok(match plugin {
            Plugin::OpenVino => Some("cpu"),
            Plugin::WebGpu => None,
        }),
    }
}

/// Why `plugin` cannot run here on the device `options` ask for, if it cannot: its library is missing, or
/// it offers no such device.
pub fn unavailable(plugin: Plugin, options: &[(String, String)]) -> Option<String> {
    if let Err(e) = register(plugin, None) {
        return Some(e.to_string());
    }
    let wanted = match wanted_kind(plugin, options) {
        Ok(w) => w,
        Err(e) => return Some(e.to_string()),
    };
    let all = match devices() {
        Ok(d) => d,
        Err(e) => return Some(e.to_string()),
    };
    let offered = all
        .iter()
        .any(|d| d.ep == plugin.ep_name() && wanted.is_none_or(|w| d.kind == w));
    if offered {
        return None;
    }
    let cpu = all
        .iter()
        .find(|d| d.ep == "CPUExecutionProvider")
        .map_or("?".to_string(), |d| d.vendor.clone());
    Some(match plugin {
        Plugin::OpenVino => format!(
            "the OpenVINO plugin offers devices on Intel hardware only, and found no Intel {} here \
             (this CPU's vendor: {cpu})",
            wanted.unwrap_or("device")
        ),
        Plugin::WebGpu => "the WebGPU plugin found no adapter: it needs a Vulkan driver and the loader \
                           libvulkan.so.1 (a software adapter such as lavapipe only with \
                           ORT_WEBGPU_EP_ALLOW_SOFTWARE_ADAPTER=1)"
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_path_is_the_only_candidate() {
        let p = Path::new("/x/lib.so");
        assert_eq!(library_candidates(Plugin::WebGpu, Some(p)), vec![p.to_path_buf()]);
    }

    /// The pins here are the ones scripts/install-onnxruntime.sh installs.
    #[test]
    fn the_install_script_pins_these_versions() {
        let script = include_str!("../../scripts/install-onnxruntime.sh");
        for p in Plugin::ALL {
            assert!(
                script.contains(&format!("\"{}\"", p.requirement())),
                "{}",
                p.requirement()
            );
            assert!(
                script.contains(p.package()) && script.contains(p.library_file()),
                "{}",
                p.name()
            );
        }
    }

    #[test]
    fn the_device_option_is_checked() {
        let opt = |v: &str| vec![("device".to_string(), v.to_string())];
        assert_eq!(wanted_kind(Plugin::OpenVino, &[]).unwrap(), Some("cpu"));
        assert_eq!(wanted_kind(Plugin::WebGpu, &[]).unwrap(), None);
        assert_eq!(wanted_kind(Plugin::OpenVino, &opt("GPU")).unwrap(), Some("gpu"));
        let e = wanted_kind(Plugin::OpenVino, &opt("tpu")).unwrap_err().to_string();
        assert!(e.contains("device=tpu") && e.contains("cpu, gpu or npu"), "{e}");
    }
}
