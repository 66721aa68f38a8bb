//! `diffir.Pipeline`: a model opened on a backend once, then restores of numpy arrays and image files, from
//! any number of Python threads at once (the runtime's pipeline is shared; each call runs outside the GIL).

use std::path::PathBuf;
use std::sync::Arc;

use diffir::{Bundle, Finish, Noise, RunsOn, Words};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::options::Keywords;
use crate::{arrays, errors, run};

/// `tile`: an int or a str.
#[derive(FromPyObject)]
pub enum IntOrStr {
    Int(i64),
    Str(String),
}

/// A DiffIR model opened on a backend, ready to restore images.
#[pyclass(frozen, module = "diffir")]
pub struct Pipeline {
    inner: Arc<diffir::Pipeline>,
}

/// The bundle `model` names: a bundle folder, an installed model's name, or None for the built-in model.
fn bundle(model: Option<PathBuf>) -> diffir::Result<Bundle> {
    match model {
        Some(m) => Bundle::load(diffir::internal::models::resolve(&m)?),
        None => Bundle::builtin(),
    }
}

/// Hand the runtime's notes (what a restore changed to finish, what decoding left out) to the `diffir`
/// logger at INFO: nothing is printed unless the program asks for it.
fn log_notes(py: Python<'_>, notes: &[String]) -> PyResult<()> {
    if notes.is_empty() {
        return Ok(());
    }
    let logger = py.import("logging")?.getattr("getLogger")?.call1(("diffir",))?;
    for note in notes {
        logger.call_method1("info", (note,))?;
    }
    Ok(())
}

impl Pipeline {
    /// A restore's own initial noise where it gives a seed (else the pipeline's, from its options).
    fn noise(&self, seed: Option<u64>) -> Option<Vec<f32>> {
        seed.map(|s| Noise::Seed(s).values(self.inner.bundle().ipr_dim()))
    }
}

#[pymethods]
impl Pipeline {
    #[new]
    #[pyo3(
        signature = (model=None, *, backend="auto", device=None, precision="fp32", tile=IntOrStr::Str("auto".into()),
                     tile_overlap=16, tile_batch=None, threads=None, workers=None, max_memory=None, seed=0),
        text_signature = "(model=None, *, backend='auto', device=None, precision='fp32', tile='auto', \
                          tile_overlap=16, tile_batch=None, threads=None, workers=None, max_memory=None, seed=0)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: Option<PathBuf>,
        backend: &str,
        device: Option<Bound<'_, PyAny>>,
        precision: &str,
        tile: IntOrStr,
        tile_overlap: usize,
        tile_batch: Option<usize>,
        threads: Option<usize>,
        workers: Option<usize>,
        max_memory: Option<Bound<'_, PyAny>>,
        seed: u64,
    ) -> PyResult<Pipeline> {
        let tile = match tile {
            IntOrStr::Int(n) => n.to_string(),
            IntOrStr::Str(s) => s,
        };
        let options = Keywords {
            backend,
            device,
            precision,
            tile,
            tile_overlap,
            tile_batch,
            threads,
            workers,
            max_memory,
            seed,
        }
        .options()?;
        let inner = py
            .detach(|| bundle(model).and_then(|b| diffir::Pipeline::open(b, &options)))
            .map_err(errors::to_py)?;
        Ok(Pipeline { inner: Arc::new(inner) })
    }

    /// Restore one image: a numpy array (or anything numpy.asarray takes) H×W×3, H×W×4 (alpha upscaled as
    /// the CLI does) or H×W (gray in, gray out), of uint8, uint16 or float32 in [0, 1]; the result has the
    /// input's dtype. `mask` (inpainting): H×W, non-zero is a hole. `seed` overrides the pipeline's seed.
    /// `progress(tiles_done, tiles_total)` is called after each tile; raising from it cancels the restore.
    #[pyo3(signature = (image, mask=None, *, seed=None, progress=None))]
    fn restore<'py>(
        &self,
        py: Python<'py>,
        image: &Bound<'py, PyAny>,
        mask: Option<&Bound<'py, PyAny>>,
        seed: Option<u64>,
        progress: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (picture, layout) = arrays::picture(py, image, self.inner.options().max_pixels)?;
        let mask = mask.map(|m| arrays::mask(py, m)).transpose()?;
        let noise = self.noise(seed);
        let inner = &self.inner;
        let done = run::run(py, progress, noise.as_deref(), |control| {
            inner.restore_picture(&picture, mask.as_ref(), Finish::default(), control)
        })?;
        log_notes(py, &done.restored.notes)?;
        arrays::result(py, &done, &picture, layout, inner.quantize())
    }

    /// Restore the image file `input` into `output` with the same bytes as `diffir restore` (alpha, 16 bits,
    /// gray and the ICC profile carried over; the format from `output`'s extension; written atomically).
    /// `mask`: a mask file or array. `outscale` resizes the result to that many times the input; `tta` runs
    /// the eight-pass self-ensemble. An existing `output` is an error unless `overwrite`.
    #[pyo3(signature = (input, output, mask=None, *, seed=None, outscale=None, tta=false, overwrite=false, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn restore_file(
        &self,
        py: Python<'_>,
        input: PathBuf,
        output: PathBuf,
        mask: Option<&Bound<'_, PyAny>>,
        seed: Option<u64>,
        outscale: Option<f64>,
        tta: bool,
        overwrite: bool,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        if outscale.is_some_and(|x| !Finish::valid_outscale(x)) {
            return Err(errors::input(format!(
                "outscale {} is not a scale in (0, {}]",
                outscale.unwrap_or_default(),
                Finish::MAX_OUTSCALE
            )));
        }
        let max_pixels = self.inner.options().max_pixels;
        let mask = match mask {
            None => None,
            Some(m) => match m.extract::<PathBuf>() {
                Ok(path) => Some(diffir::internal::image_io::read_mask(&path, max_pixels).map_err(errors::to_py)?),
                Err(_) => Some(arrays::mask(py, m)?),
            },
        };
        let noise = self.noise(seed);
        let inner = &self.inner;
        let finish = Finish { outscale, tta };
        let notes = run::run(py, progress, noise.as_deref(), |control| {
            inner.restore_file(&input, &output, mask.as_ref(), finish, control, overwrite)
        })?;
        log_notes(py, &notes)
    }

    /// What this pipeline runs: the model (name, path, task, scale), the backend in one line, and the plan.
    #[getter]
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let bundle = self.inner.bundle();
        let report = self.inner.backend();
        let plan = self.inner.plan();
        let d = PyDict::new(py);
        d.set_item("model", &bundle.spec.name)?;
        d.set_item("path", bundle.origin.to_string_lossy())?;
        d.set_item("task", bundle.task().to_string())?;
        d.set_item("scale", bundle.scale())?;
        d.set_item("backend", report.runs_on.to_string())?;
        d.set_item("summary", report.summary(Words::Options))?;
        let library = match report.runs_on {
            RunsOn::Onnxruntime(_) => diffir::internal::backend::ort_library::library_path(),
            _ => None,
        }
        .map(|p| p.to_string_lossy().into_owned());
        d.set_item("onnxruntime", library)?;
        let p = PyDict::new(py);
        p.set_item("tile", plan.tile)?;
        p.set_item("tile_overlap", self.inner.tiling().overlap)?;
        p.set_item("tile_batch", plan.tile_batch)?;
        p.set_item("workers", plan.workers)?;
        p.set_item("threads", plan.threads)?;
        p.set_item("devices", plan.devices.clone())?;
        p.set_item("precision", plan.precision.to_string())?;
        p.set_item(
            "notes",
            plan.notes.iter().map(|n| n.render(Words::Options)).collect::<Vec<_>>(),
        )?;
        d.set_item("plan", p)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let b = self.inner.bundle();
        format!(
            "Pipeline(model={:?}, task={}, scale={}, backend={:?})",
            b.spec.name,
            b.task(),
            b.scale(),
            self.inner.backend().runs_on.to_string()
        )
    }
}
