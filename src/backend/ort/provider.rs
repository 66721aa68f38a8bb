//! onnxruntime's execution providers: their names and kinds, whether one can start here, and the bundle
//! as each runs it (the graph rewrites GPU providers need).

use ort::ep::{ExecutionProvider, TensorRT, CUDA};

use crate::backend::ort_library::{runtime, GPU_INSTALL_HINT};
use crate::bundle::{Bundle, GraphKind};
use crate::error::{Error, Result};

/// onnxruntime execution providers, in `auto`'s order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// NVIDIA TensorRT (through onnxruntime).
    TensorRt,
    /// NVIDIA CUDA.
    Cuda,
    /// The CPU.
    Cpu,
    /// Intel's OpenVINO, loaded as a plugin (crate::backend::plugin): Intel CPUs, GPUs and NPUs.
    OpenVino,
    /// WebGPU, loaded as a plugin (crate::backend::plugin): GPUs through Vulkan, Metal or D3D12.
    WebGpu,
}

impl Provider {
    /// The order `auto` and `ort` try the providers in.
    pub const PREFERENCE: [Provider; 3] = [Provider::TensorRt, Provider::Cuda, Provider::Cpu];

    /// The provider's name as the backend line prints it.
    pub fn name(self) -> &'static str {
        match self {
            Provider::TensorRt => "TensorRT",
            Provider::Cuda => "CUDA",
            Provider::Cpu => "CPU",
            Provider::OpenVino => "OpenVINO",
            Provider::WebGpu => "WebGPU",
        }
    }

    /// Whether the provider is planned as a GPU (one engine per device, one worker, fixed-shape backbone).
    /// OpenVINO is planned as the CPU it runs on by default.
    pub fn is_gpu(self) -> bool {
        matches!(self, Provider::TensorRt | Provider::Cuda | Provider::WebGpu)
    }

    /// Whether the provider comes with onnxruntime-gpu (CUDA 13) rather than the CPU package.
    pub fn needs_gpu_package(self) -> bool {
        matches!(self, Provider::TensorRt | Provider::Cuda)
    }

    /// The plugin library the provider comes in, if it is one.
    pub fn plugin(self) -> Option<crate::backend::plugin::Plugin> {
        use crate::backend::plugin::Plugin;
        match self {
            Provider::OpenVino => Some(Plugin::OpenVino),
            Provider::WebGpu => Some(Plugin::WebGpu),
            _ => None,
        }
    }
}

/// Why a provider cannot be used here, if it cannot: not compiled into this library (CUDA, TensorRT), or a
/// plugin that is not installed or offers no device of the kind `ep_options` ask for (OpenVINO, WebGPU).
pub fn provider_unavailable(p: Provider, ep_options: &[(String, String)]) -> Option<String> {
    if let Some(plugin) = p.plugin() {
        return crate::backend::plugin::unavailable(plugin, ep_options);
    }
    let available = match p {
        Provider::Cpu | Provider::OpenVino | Provider::WebGpu => return None,
        Provider::Cuda => CUDA::is_available(),
        Provider::TensorRt => TensorRT::is_available(),
    };
    match available {
        // The provider is in the build; the CUDA and cuDNN libraries it loads must be on the machine.
        Ok(true) => {
            let rt = runtime().ok()?;
            crate::backend::cuda_libs::preload(&rt.path)
                .unusable()
                .map(|why| format!("{}: {why}", p.name()))
        }
        Ok(false) => Some(format!(
            "{}: not in this onnxruntime build ({GPU_INSTALL_HINT})",
            p.name()
        )),
        Err(e) => Some(format!("{}: {e}", p.name())),
    }
}

/// The bundle as provider `p` runs it: on GPU providers every `ReduceL2` is rewritten (crate::graph_rewrite),
/// and TensorRT gets its LayerNorms' channel means back as `ReduceMean`s, so that its fp32 fallback for
/// LayerNorm finds them; once per engine, so every session of the engine (pool, fp32 redo, other shapes)
/// shares the result.
pub fn for_provider(bundle: &Bundle, p: Provider) -> Result<Bundle> {
    let mut out = bundle.clone();
    if !p.is_gpu() {
        return Ok(out);
    }
    for kind in GraphKind::ALL {
        let g = bundle.graph(kind);
        let err = |e: String| Error::graph(kind, format!("{}: rewrite: {e}", g.origin.display()));
        let mut bytes = crate::graph_rewrite::reduce_l2_as_sum_of_squares(&g.bytes).map_err(err)?;
        if p == Provider::TensorRt {
            let source = bytes.as_deref().unwrap_or(&g.bytes);
            if let Some(undone) = crate::graph_rewrite::channel_means_as_reduce_mean(source).map_err(err)? {
                bytes = Some(undone);
            }
        }
        if let Some(bytes) = bytes {
            out = out.with_graph_bytes(kind, bytes);
        }
    }
    Ok(out)
}
