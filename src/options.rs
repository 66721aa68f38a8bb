//! One options struct for the library: which backend and devices, how the work is split, the tiling, the
//! prior's initial noise and the input limits. The pipeline derives the rest (GPU tile shapes, the worker
//! split) once the provider is known; the CLI maps its flags onto this struct.

use crate::backend::BackendKind;
use crate::bundle::Precision;
use crate::plan::{PlanRequest, TileRequest};
use crate::triton::TritonOptions;

/// The initial noise x_T of the prior's reverse diffusion.
#[derive(Debug, Clone, PartialEq)]
pub enum Noise {
    /// One draw of ipr_dim standard normals from this seed (reproducible across runs and machines).
    Seed(u64),
    /// These values (1 × ipr_dim).
    Values(Vec<f32>),
}

impl Default for Noise {
    fn default() -> Self {
        Noise::Seed(0)
    }
}

impl Noise {
    /// The values for a prior of `dim` values.
    pub fn values(&self, dim: usize) -> Vec<f32> {
        match self {
            Noise::Seed(seed) => crate::sampler::seeded_noise(*seed, dim),
            Noise::Values(v) => v.clone(),
        }
    }
}

/// Everything a [`crate::Pipeline`] is opened with ([`crate::Pipeline::open`]).
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The backend. Default: [`BackendKind::Auto`] (TensorRT, CUDA, onnxruntime CPU, then tract, whichever
    /// starts first). [`BackendKind::Triton`] needs [`RestoreOptions::triton`].
    pub backend: BackendKind,
    /// GPUs for the CUDA and TensorRT backends, one engine each. Default: empty (device 0).
    pub devices: Vec<i32>,
    /// Threads in all; 0 = every core. Default: 0.
    pub threads: usize,
    /// Tiles in flight at once (Triton: requests in flight). Default: None (one per thread on the CPU, one
    /// per GPU, 4 for Triton).
    pub workers: Option<usize>,
    /// The backbone's precision. Default: [`Precision::Fp32`].
    pub precision: Precision,
    /// The backbone tile. Default: [`TileRequest::Auto`] (128 on the CPU; on a GPU the largest that fits).
    pub tile: TileRequest,
    /// Overlap between tiles in input pixels (at most half a tile), feathered. Default: 16.
    pub tile_overlap: usize,
    /// Tiles per backbone call. Default: None (1 on the CPU; on a GPU what the tile search fits; 4 for
    /// Triton, at most the model's max_batch_size).
    pub tile_batch: Option<usize>,
    /// Memory a CPU plan may use in all, in bytes: workers beyond what fits are not started. Default: None
    /// (half of the memory available when the pipeline opens).
    pub max_memory: Option<u64>,
    /// The prior's initial noise. Default: [`Noise::Seed`]`(0)`.
    pub noise: Noise,
    /// The largest input in pixels, checked from the header before decoding. Default: 200,000,000.
    pub max_pixels: u64,
    /// JPEG quality (1–100) of JPEG outputs written with [`crate::Pipeline::write_options`]. Default: 95.
    pub jpeg_quality: u8,
    /// Extra onnxruntime CUDA provider options (KEY, VALUE). Default: empty.
    pub cuda_options: Vec<(String, String)>,
    /// Options of the plugin providers (OpenVINO, WebGPU): `device` = cpu, gpu or npu picks the plugin's
    /// device; other keys go to the plugin as given. Default: empty (OpenVINO's CPU in f32, WebGPU's
    /// first adapter).
    pub ep_options: Vec<(String, String)>,
    /// The plugin library of [`BackendKind::OrtOpenvino`] / [`BackendKind::OrtWebgpu`]. Default: None
    /// (looked for: `$DIFFIR_OPENVINO_LIBRARY` / `$DIFFIR_WEBGPU_LIBRARY`, the install folder, the pip
    /// package).
    pub ep_library: Option<std::path::PathBuf>,
    /// The Triton server for [`BackendKind::Triton`]. Default: None.
    pub triton: Option<TritonOptions>,
    /// Fail to open unless the work runs on an NVIDIA GPU (CUDA or TensorRT). Default: false (`auto` runs
    /// on the CPU when the CUDA provider cannot start, warning where this machine has a GPU).
    pub require_gpu: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            backend: BackendKind::Auto,
            devices: vec![],
            threads: 0,
            workers: None,
            precision: Precision::Fp32,
            tile: TileRequest::Auto,
            tile_overlap: crate::tiling::DEFAULT_TILE_OVERLAP,
            tile_batch: None,
            max_memory: None,
            noise: Noise::default(),
            max_pixels: crate::image_io::DEFAULT_MAX_PIXELS,
            jpeg_quality: crate::image_io::DEFAULT_JPEG_QUALITY,
            cuda_options: vec![],
            ep_options: vec![],
            ep_library: None,
            triton: None,
            require_gpu: false,
        }
    }
}

impl RestoreOptions {
    /// The provider settings that are not part of the plan.
    pub fn provider_options(&self) -> crate::backend::ProviderOptions {
        crate::backend::ProviderOptions {
            cuda: self.cuda_options.clone(),
            ep: self.ep_options.clone(),
            ep_library: self.ep_library.clone(),
            require_gpu: self.require_gpu,
        }
    }

    /// The options that ask backend `kind` for `req` with `provider`'s settings, the rest at their defaults:
    /// the inverse of [`RestoreOptions::plan_request`] and [`RestoreOptions::provider_options`].
    pub fn from_request(kind: BackendKind, req: &PlanRequest, provider: &crate::backend::ProviderOptions) -> Self {
        RestoreOptions {
            backend: kind,
            devices: req.devices.clone(),
            threads: req.threads,
            workers: req.workers,
            precision: req.precision,
            tile: req.tile,
            tile_batch: req.tile_batch,
            max_memory: req.max_memory,
            cuda_options: provider.cuda.clone(),
            ep_options: provider.ep.clone(),
            ep_library: provider.ep_library.clone(),
            require_gpu: provider.require_gpu,
            ..RestoreOptions::default()
        }
    }

    /// What the options ask of the plan.
    pub fn plan_request(&self) -> PlanRequest {
        PlanRequest {
            threads: self.threads,
            workers: self.workers,
            devices: self.devices.clone(),
            tile_batch: self.tile_batch,
            tile: self.tile,
            precision: self.precision,
            max_memory: self.max_memory,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every "Default: …" in the docs above, checked against `impl Default`.
    #[test]
    fn defaults_match_the_docs() {
        let o = RestoreOptions::default();
        assert_eq!(o.backend, BackendKind::Auto);
        assert!(o.devices.is_empty());
        assert_eq!(o.threads, 0);
        assert_eq!(o.workers, None);
        assert_eq!(o.precision, Precision::Fp32);
        assert_eq!(o.tile, TileRequest::Auto);
        assert_eq!(o.tile_overlap, 16);
        assert_eq!(o.tile_batch, None);
        assert_eq!(o.max_memory, None);
        assert_eq!(o.noise, Noise::Seed(0));
        assert_eq!(o.max_pixels, 200_000_000);
        assert_eq!(o.jpeg_quality, 95);
        assert!(o.cuda_options.is_empty() && o.triton.is_none());
        assert!(o.ep_options.is_empty() && o.ep_library.is_none());
        assert_eq!(Noise::Seed(3).values(8), crate::sampler::seeded_noise(3, 8));
        assert_eq!(Noise::Values(vec![1.0]).values(1), [1.0]);
    }

    /// `from_request` gives back the request and the provider settings it was made from.
    #[test]
    fn requests_round_trip() {
        let req = PlanRequest {
            threads: 3,
            workers: Some(2),
            devices: vec![0, 1],
            tile_batch: Some(4),
            tile: TileRequest::Pixels(96),
            precision: Precision::Fp16,
            max_memory: Some(1 << 30),
        };
        let provider = crate::backend::ProviderOptions {
            cuda: vec![("a".into(), "1".into())],
            ep: vec![("device".into(), "gpu".into())],
            ep_library: Some("lib.so".into()),
            require_gpu: true,
        };
        let o = RestoreOptions::from_request(BackendKind::OrtCuda, &req, &provider);
        assert_eq!((o.backend, o.plan_request()), (BackendKind::OrtCuda, req));
        let p = o.provider_options();
        assert_eq!(
            (p.cuda, p.ep, p.ep_library, p.require_gpu),
            (provider.cuda, provider.ep, provider.ep_library, true)
        );
    }
}
