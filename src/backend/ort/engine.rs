//! The onnxruntime engine: a pool of sessions per graph on one provider, re-planned smaller after running
//! out of memory, with the fixed-shape backbone bound to preallocated buffers or a captured CUDA graph.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, OnceLock};

use ort::session::Session;

use crate::backend::capture::{self, run_with_capture_fallback};
use crate::backend::ort_library::{runtime, Runtime};
use crate::backend::{Engine, EngineOptions, Input, Tensor};
use crate::bundle::{Bundle, GraphKind, Precision};
use crate::error::{Error, Result};

use super::provider::{for_provider, provider_unavailable, Provider};
use super::session::{bound, fixed_shape, run_session, session, shared_pool, wants_cuda_graph, Build, Pool, Runner};
use crate::backend::ort_library::{library_version, load, ORT_VERSION};
use crate::backend::plugin;

/// The onnxruntime engine: sessions per graph, on one execution provider.
pub struct OrtEngine {
    /// The sessions and the options they were built with; the backbone's are rebuilt at a smaller shape
    /// after running out of memory ([`Engine::resize`]), so runs take this lock to read.
    state: std::sync::RwLock<State>,
    /// fp32 sessions, built on first use, that redo outputs an fp16 engine got wrong.
    fp32: Vec<OnceLock<std::result::Result<Mutex<Session>, String>>>,
    /// The bundle in float32 (the redo sessions' graphs), when the engine runs fp16.
    bundle_fp32: Bundle,
    /// GPU providers plan the backbone for the tile shape only; images smaller than one tile run on this
    /// dynamic-shape session, built on first use.
    other_shapes: OnceLock<std::result::Result<Mutex<Session>, String>>,
    bundle: Bundle,
    provider: Provider,
    library: PathBuf,
    /// What the engine changed by itself since the last [`Engine::take_notes`] (a CUDA graph capture that
    /// failed and was replaced by the same session without a graph).
    notes: Mutex<Vec<String>>,
}

/// An engine's sessions and the options they were built with.
struct State {
    /// Per graph (indexed by `GraphKind as usize`), a pool of sessions: one per concurrent worker for the
    /// tiled graphs, so parallel tiles do not queue on one session.
    sessions: Vec<Vec<Mutex<Runner>>>,
    /// Why the fixed-shape backbone does not run through I/O binding (or a CUDA graph), when it does not.
    binding_note: Option<String>,
    opts: EngineOptions,
}

impl OrtEngine {
    /// Start sessions on provider `p`; an error says why it cannot run here.
    pub fn start(bundle: &Bundle, opts: &EngineOptions, p: Provider) -> Result<Self> {
        load(p.needs_gpu_package())?;
        let rt = runtime()?;
        if let Some(why) = provider_unavailable(p, &opts.ep_options) {
            return Err(Error::Backend(why));
        }
        let bundle_fp32 = for_provider(bundle, p)?;
        // TensorRT builds its fp16 engines from the float32 graph, and OpenVINO lowers its precision itself (its
        // inference precision hint); the others run the bundle's fp16 backbone.
        let graph_precision = match (p, opts.precision) {
            (Provider::TensorRt | Provider::OpenVino, _) => Precision::Fp32,
            (_, precision) => precision,
        };
        let bundle = match graph_precision {
            Precision::Fp32 => bundle_fp32.clone(),
            precision => for_provider(&bundle.with_precision(precision)?, p)?,
        };
        let (sessions, binding_note) = Self::sessions(rt, &bundle, opts, p)?;
        let engine = OrtEngine {
            state: std::sync::RwLock::new(State {
                sessions,
                binding_note,
                opts: opts.clone(),
            }),
            fp32: GraphKind::ALL.iter().map(|_| OnceLock::new()).collect(),
            bundle_fp32,
            other_shapes: OnceLock::new(),
            bundle,
            provider: p,
            library: rt.path.clone(),
            notes: Mutex::new(vec![]),
        };
        engine.warm_up()?;
        Ok(engine)
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// GPU providers build kernels or engines on the first run: do it now, on the tile shape.
    fn warm_up(&self) -> Result<()> {
        let (tile_shape, n) = {
            let state = self.state();
            (state.opts.tile_shape, state.opts.tile_batch.max(1))
        };
        let (Provider::Cuda | Provider::TensorRt | Provider::WebGpu, Some((h, w))) = (self.provider, tile_shape) else {
            return Ok(());
        };
        let c = self.bundle.spec.input_channels;
        let d = self.bundle.ipr_dim();
        let image = vec![0.5f32; n * c * h * w];
        let ipr = vec![0.0f32; n * d];
        self.run(
            GraphKind::Backbone,
            &[Input::F32(&[n, c, h, w], &image), Input::F32(&[n, d], &ipr)],
        )
        .map(|_| ())
    }

    /// Every graph's session pool, and why the backbone is not bound (when it is not).
    fn sessions(
        rt: &Runtime,
        bundle: &Bundle,
        opts: &EngineOptions,
        p: Provider,
    ) -> Result<(Vec<Pool>, Option<String>)> {
        let mut note = None;
        let pools = GraphKind::ALL
            .into_iter()
            .map(|kind| {
                let (pool, why) = Self::pool(rt, bundle, opts, kind, p)?;
                note = note.take().or(why);
                Ok(pool)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((pools, note))
    }

    /// The session pool of one graph, and why its fixed-shape sessions are not bound (when they are not).
    fn pool(
        rt: &Runtime,
        bundle: &Bundle,
        opts: &EngineOptions,
        kind: GraphKind,
        p: Provider,
    ) -> Result<(Pool, Option<String>)> {
        let size = match kind {
            GraphKind::Backbone | GraphKind::CpenFeatures => opts.workers.max(1),
            _ => 1,
        };
        let fixed = fixed_shape(kind, opts);
        // CPU sessions load the optimised graph (cached across starts) and share its weights; GPU sessions
        // each hold theirs on the device.
        if p == Provider::Cpu && !opts.own_weights && !(fixed.is_some() && opts.bind_io) {
            let pool = shared_pool(rt, bundle, opts, kind, p, fixed, size)?;
            return Ok((pool.into_iter().map(|s| Mutex::new(Runner::Plain(s))).collect(), None));
        }
        let mut note = None;
        let pool = (0..size)
            .map(|_| {
                let (runner, why) = Self::runner(rt, bundle, opts, kind, p)?;
                note = note.take().or(why);
                Ok(Mutex::new(runner))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((pool, note))
    }

    /// One session of `kind` as the engine runs it: bound to buffers of its fixed shape where the plan binds
    /// I/O, else plain; and why binding is off, where it failed.
    fn runner(
        rt: &Runtime,
        bundle: &Bundle,
        opts: &EngineOptions,
        kind: GraphKind,
        p: Provider,
    ) -> Result<(Runner, Option<String>)> {
        let fixed = fixed_shape(kind, opts);
        let plain = || {
            let build = Build {
                fixed,
                ..Build::default()
            };
            session(rt, bundle, opts, kind, p, build).map(Runner::Plain)
        };
        match fixed {
            Some(shape) if opts.bind_io && p.plugin().is_none() => match bound(rt, bundle, opts, kind, p, shape) {
                Ok(r) => Ok((r, None)),
                Err(why) => Ok((plain()?, Some(why))),
            },
            _ => Ok((plain()?, None)),
        }
    }

    /// The backbone session that replaces one whose CUDA graph capture failed: the same session without a
    /// graph.
    fn uncaptured(&self, opts: &EngineOptions) -> Result<Runner> {
        let opts = EngineOptions {
            cuda_options: opts
                .cuda_options
                .iter()
                .filter(|(k, _)| k != "enable_cuda_graph")
                .cloned()
                .collect(),
            ..opts.clone()
        };
        Self::runner(runtime()?, &self.bundle, &opts, GraphKind::Backbone, self.provider).map(|(r, _)| r)
    }

    fn fp32_session(&self, graph: GraphKind) -> Result<&Mutex<Session>> {
        let slot = self.fp32[graph as usize].get_or_init(|| {
            let rt = runtime().map_err(|e| e.to_string())?;
            // Any shape: this session only redoes outputs, of tiles or of whole small images. TensorRT's
            // float32 redo runs on CUDA.
            let p = match self.provider {
                Provider::TensorRt => Provider::Cuda,
                p => p,
            };
            let opts = EngineOptions {
                precision: Precision::Fp32,
                ..self.state().opts.clone()
            };
            session(rt, &self.bundle_fp32, &opts, graph, p, Build::default())
                .map(Mutex::new)
                .map_err(|e| e.to_string())
        });
        slot.as_ref()
            .map_err(|e| Error::graph(graph, format!("fp32 fallback: {e}")))
    }

    /// The session for a backbone input that is not the planned tile shape.
    fn other_shape_session(&self) -> Result<&Mutex<Session>> {
        let graph = GraphKind::Backbone;
        let slot = self.other_shapes.get_or_init(|| {
            let rt = runtime().map_err(|e| e.to_string())?;
            let opts = self.state().opts.clone();
            let (bundle, opts, p) = (&self.bundle, &opts, self.provider);
            let built = if p == Provider::Cpu && !opts.own_weights {
                shared_pool(rt, bundle, opts, graph, p, None, 1).map(|mut v| v.remove(0))
            } else {
                session(rt, bundle, opts, graph, p, Build::default())
            };
            built.map(Mutex::new).map_err(|e| e.to_string())
        });
        slot.as_ref()
            .map_err(|e| Error::graph(graph, format!("dynamic-shape session: {e}")))
    }
}

impl OrtEngine {
    /// `Engine::run`, and with `cancel` `Engine::run_until`.
    fn run_on(&self, graph: GraphKind, inputs: &[Input<'_>], cancel: Option<&AtomicBool>) -> Result<Tensor> {
        let state = self.state();
        if let (Some((n, h, w)), Some(Input::F32(shape, _))) = (fixed_shape(graph, &state.opts), inputs.first()) {
            if shape.len() == 4 && (shape[0], shape[2], shape[3]) != (n, h, w) {
                drop(state);
                let mut session = self.other_shape_session()?.lock().unwrap_or_else(|e| e.into_inner());
                let _shared = self.device_shared();
                return run_session(&mut session, graph, inputs, cancel);
            }
        }
        let pool = &state.sessions[graph as usize];
        if pool.is_empty() {
            return Err(Error::graph(
                graph,
                "its sessions could not be rebuilt after running out of memory",
            ));
        }
        let mut runner = pool
            .iter()
            .find_map(|m| m.try_lock().ok())
            .unwrap_or_else(|| pool[0].lock().unwrap_or_else(|e| e.into_inner()));
        if let Runner::Bound(_, Some(_)) = &*runner {
            return run_with_capture_fallback(
                &mut *runner,
                |r| matches!(r, Runner::Bound(_, Some(c)) if c.capturing()),
                |r| r.run(graph, inputs, None),
                || self.uncaptured(&state.opts),
                &self.notes,
            );
        }
        let _shared = self.device_shared();
        runner.run(graph, inputs, cancel)
    }
}

impl Engine for OrtEngine {
    fn run(&self, graph: GraphKind, inputs: &[Input<'_>]) -> Result<Tensor> {
        self.run_on(graph, inputs, None)
    }

    fn run_until(&self, graph: GraphKind, inputs: &[Input<'_>], cancel: &AtomicBool) -> Result<Tensor> {
        self.run_on(graph, inputs, Some(cancel))
    }

    fn run_fp32(&self, graph: GraphKind, inputs: &[Input<'_>]) -> Option<Result<Tensor>> {
        if self.state().opts.precision == Precision::Fp32 {
            return None;
        }
        Some(self.fp32_session(graph).and_then(|s| {
            let mut session = s.lock().unwrap_or_else(|e| e.into_inner());
            let _shared = self.device_shared();
            run_session(&mut session, graph, inputs, None)
        }))
    }

    fn fixed_batch(&self, graph: GraphKind) -> Option<usize> {
        fixed_shape(graph, &self.state().opts).map(|(n, _, _)| n)
    }

    /// Rebuild the fixed-shape backbone sessions for `batch` tiles of `tile_shape` (None: the same tile):
    /// the sessions of the old shape are dropped first, so their device memory is free for the new ones.
    fn resize(&self, batch: usize, tile_shape: Option<(usize, usize)>) -> Result<()> {
        let rt = runtime()?;
        let kind = GraphKind::Backbone;
        {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            if fixed_shape(kind, &state.opts).is_none() {
                return Ok(());
            }
            let opts = EngineOptions {
                tile_batch: batch.max(1),
                tile_shape: tile_shape.or(state.opts.tile_shape),
                ..state.opts.clone()
            };
            state.sessions[kind as usize] = vec![];
            let (pool, note) = Self::pool(rt, &self.bundle, &opts, kind, self.provider)?;
            state.sessions[kind as usize] = pool;
            state.binding_note = note;
            state.opts = opts;
        }
        self.warm_up()
    }

    fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut *self.notes.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn describe(&self) -> String {
        let state = self.state();
        let opts = &state.opts;
        let io = match &state.binding_note {
            Some(why) => format!("; {why}"),
            None if !opts.bind_io
                || self.provider.plugin().is_some()
                || fixed_shape(GraphKind::Backbone, opts).is_none() =>
            {
                String::new()
            }
            None if self.provider == Provider::Cuda && wants_cuda_graph(opts) => "; bound I/O, CUDA graph".into(),
            None => "; bound I/O".into(),
        };
        let version = library_version().map_or_else(|| ORT_VERSION.to_string(), |(v, _)| v);
        let plugin = match self.provider.plugin().map(|p| plugin::register(p, None)) {
            Some(Ok(path)) => format!("; plugin {}", path.display()),
            _ => String::new(),
        };
        let device = match self.provider {
            Provider::Cuda | Provider::TensorRt => format!(", device {}", opts.device),
            _ => String::new(),
        };
        format!(
            "onnxruntime {version} ({}{device}{io}{plugin}) from {}",
            self.provider.name(),
            self.library.display()
        )
    }
}

impl OrtEngine {
    /// For a run on a CUDA device, the device shared with other runs (a capturing session has it alone:
    /// crate::backend::capture).
    fn device_shared(&self) -> Option<std::sync::RwLockReadGuard<'static, ()>> {
        matches!(self.provider, Provider::Cuda | Provider::TensorRt).then(capture::device_shared)
    }
}
