//! The restore pipeline: CPEN once per image, the reverse diffusion loop, then the backbone, then
//! crop/clamp (and the inpainting composite).

use crate::backend::{self, BackendKind, Engine, EngineOptions, Input, Tensor};
use crate::bundle::{Bundle, GraphKind, Task};
use crate::error::{Error, Result};
use crate::preprocess::{self, Image, Mask, Quantize};
use crate::sampler;

/// A loaded model on a started backend.
pub struct Pipeline {
    bundle: Bundle,
    engine: Box<dyn Engine>,
    backend_line: String,
}

/// The result of one restore, with the prior that produced it.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The restored image, H·s × W·s × 3 in [0, 1].
    pub image: Image,
    /// CPEN's condition c (ipr_dim values).
    pub condition: Vec<f32>,
    /// x after each reverse step, t = T−1 … 0; the last one is the IPR.
    pub steps: Vec<Vec<f32>>,
}

impl Restored {
    /// The prior (IPR) every backbone call received.
    pub fn ipr(&self) -> &[f32] {
        self.steps.last().map(|v| v.as_slice()).unwrap_or(&[])
    }
}

impl Pipeline {
    /// Start `kind` for `bundle`.
    pub fn new(bundle: Bundle, kind: BackendKind, opts: &EngineOptions) -> Result<Pipeline> {
        let (engine, backend_line) = backend::select(kind, &bundle, opts)?;
        Ok(Pipeline {
            bundle,
            engine,
            backend_line,
        })
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// One line saying which backend runs and why.
    pub fn backend_line(&self) -> &str {
        &self.backend_line
    }

    /// How 8-bit outputs are quantised for this model's task.
    pub fn quantize(&self) -> Quantize {
        match self.bundle.task() {
            Task::Inpaint => Quantize::Truncate,
            _ => Quantize::Round,
        }
    }

    /// CPEN on a padded NCHW network input: the condition c.
    pub fn condition(&self, x: &[f32], shape: &[usize; 4]) -> Result<Vec<f32>> {
        let out = self.engine.run(GraphKind::Cpen, &[Input::F32(shape, x)])?;
        self.expect_vector(GraphKind::Cpen, &out)?;
        Ok(out.data)
    }

    /// The reverse chain from `noise`, conditioned on c; returns x after each step.
    pub fn sample(&self, condition: &[f32], noise: &[f32]) -> Result<Vec<Vec<f32>>> {
        let d = self.bundle.ipr_dim();
        if noise.len() != d {
            return Err(Error::Shape(format!(
                "initial noise has {} values; this model's prior has {d}",
                noise.len()
            )));
        }
        let shape = [1, d];
        sampler::reverse_chain(&self.bundle.schedule, noise, |x, t| {
            let out = self.engine.run(
                GraphKind::Denoiser,
                &[
                    Input::F32(&shape, x),
                    Input::I64(&[1], &[t]),
                    Input::F32(&shape, condition),
                ],
            )?;
            self.expect_vector(GraphKind::Denoiser, &out)?;
            Ok(out.data)
        })
    }

    /// The backbone on a padded NCHW input with the given prior.
    pub fn backbone(&self, x: &[f32], shape: &[usize; 4], ipr: &[f32]) -> Result<Tensor> {
        let s = self.bundle.scale();
        let out = self.engine.run(
            GraphKind::Backbone,
            &[Input::F32(shape, x), Input::F32(&[1, ipr.len()], ipr)],
        )?;
        let want = [1, 3, shape[2] * s, shape[3] * s];
        if out.shape != want {
            return Err(Error::graph(
                "backbone",
                format!(
                    "output shape {} for input {} (expected {})",
                    backend::shape_str(&out.shape),
                    backend::shape_str(shape),
                    backend::shape_str(&want)
                ),
            ));
        }
        Ok(out)
    }

    /// Restore one image with the given initial noise (1 × ipr_dim). Inpainting needs `mask`.
    pub fn restore(&self, image: &Image, mask: Option<&Mask>, noise: &[f32]) -> Result<Restored> {
        self.check_inputs(image, mask)?;
        let spec = &self.bundle.spec;
        let (x, shape) = preprocess::network_input(image, mask, spec.size_multiple, spec.padding);
        let condition = self.condition(&x, &shape)?;
        let steps = self.sample(&condition, noise)?;
        let ipr = steps.last().expect("at least one step");
        let out = self.backbone(&x, &shape, ipr)?;
        let s = self.bundle.scale();
        let composite = mask.map(|m| (image, m));
        let image = preprocess::finish(&out.data, &out.shape, image.height * s, image.width * s, composite);
        Ok(Restored {
            image,
            condition,
            steps,
        })
    }

    fn check_inputs(&self, image: &Image, mask: Option<&Mask>) -> Result<()> {
        if image.height == 0 || image.width == 0 {
            return Err(Error::Shape("the image is empty".into()));
        }
        match (self.bundle.task(), mask) {
            (Task::Inpaint, None) => Err(Error::Shape("this is an inpainting model: give a --mask".into())),
            (Task::Inpaint, Some(m)) if (m.height, m.width) != (image.height, image.width) => {
                Err(Error::Shape(format!(
                    "mask is {}x{} but the image is {}x{}",
                    m.width, m.height, image.width, image.height
                )))
            }
            (task, Some(_)) if task != Task::Inpaint => Err(Error::Shape(format!(
                "a mask was given but this {task} model takes none"
            ))),
            _ => Ok(()),
        }
    }

    fn expect_vector(&self, graph: GraphKind, t: &Tensor) -> Result<()> {
        let want = [1, self.bundle.ipr_dim()];
        if t.shape != want {
            return Err(Error::graph(
                graph.name(),
                format!(
                    "output shape {} (expected {})",
                    backend::shape_str(&t.shape),
                    backend::shape_str(&want)
                ),
            ));
        }
        Ok(())
    }
}
