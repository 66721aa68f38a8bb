//! Fixed-shape sessions run through onnxruntime I/O binding: inputs and the output live in buffers
//! allocated once for the planned batch of tiles (page-locked host memory on CUDA, so transfers are DMA
//! copies; plain host memory on the CPU), and with `--cuda-graph` in device memory at fixed addresses so
//! the CUDA provider can capture the whole backbone once and replay it.

use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, Session};
use ort::value::Tensor as OrtTensor;

use super::{shape_str, Input, Tensor};
use crate::bundle::GraphKind;
use crate::error::{Error, Result};

/// Where the bound buffers live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    /// Host memory of the session's CPU allocator (CPU provider).
    Host,
    /// Page-locked host memory (CUDA provider): onnxruntime copies it to the device each run.
    Pinned,
    /// Device memory at fixed addresses (CUDA graphs): staged through pinned memory by explicit copies.
    Device,
}

/// A session with its inputs and output bound to preallocated buffers of one shape.
pub struct Bound {
    // Fields drop in order: the binding and the tensors before the allocators and the session.
    binding: IoBinding,
    names: Vec<&'static str>,
    shapes: Vec<Vec<usize>>,
    staged: Vec<OrtTensor<f32>>,
    device: Vec<OrtTensor<f32>>,
    staged_output: OrtTensor<f32>,
    device_output: Option<OrtTensor<f32>>,
    output_shape: Vec<usize>,
    memory: Memory,
    graph: GraphKind,
    _allocators: Vec<Allocator>,
    session: Session,
}

fn err(graph: GraphKind, e: impl std::fmt::Display) -> Error {
    Error::graph_or_oom(graph, format!("onnxruntime I/O binding: {e}"))
}

impl Bound {
    /// Bind `session`'s float32 inputs (`shapes`, in the graph contract's order) and its single output
    /// (`output_shape`) to buffers in `memory` on `device`.
    pub fn new(
        session: Session,
        graph: GraphKind,
        shapes: Vec<Vec<usize>>,
        output_shape: Vec<usize>,
        memory: Memory,
        device: i32,
    ) -> Result<Bound> {
        let e = |x: ort::Error| err(graph, x);
        let info = |dev: AllocationDevice<'static>, ty: MemoryType| {
            MemoryInfo::new(dev, device, AllocatorType::Device, ty).map_err(e)
        };
        let (stage_in, stage_out) = match memory {
            Memory::Host => (
                info(AllocationDevice::CPU, MemoryType::Default)?,
                info(AllocationDevice::CPU, MemoryType::Default)?,
            ),
            Memory::Pinned | Memory::Device => (
                info(AllocationDevice::CUDA_PINNED, MemoryType::CPUInput)?,
                info(AllocationDevice::CUDA_PINNED, MemoryType::CPUOutput)?,
            ),
        };
        let input_alloc = Allocator::new(&session, stage_in).map_err(e)?;
        let output_alloc = Allocator::new(&session, stage_out).map_err(e)?;
        let mut allocators = vec![];
        let staged = shapes
            .iter()
            .map(|s| OrtTensor::<f32>::new(&input_alloc, s.clone()).map_err(e))
            .collect::<Result<Vec<_>>>()?;
        let staged_output = OrtTensor::<f32>::new(&output_alloc, output_shape.clone()).map_err(e)?;
        let mut binding = session.create_binding().map_err(e)?;
        let names = graph.contract().0.to_vec();
        let (device_tensors, device_output) = if memory == Memory::Device {
            let dev_alloc = Allocator::new(&session, info(AllocationDevice::CUDA, MemoryType::Default)?).map_err(e)?;
            let inputs = shapes
                .iter()
                .map(|s| OrtTensor::<f32>::new(&dev_alloc, s.clone()).map_err(e))
                .collect::<Result<Vec<_>>>()?;
            for (name, t) in names.iter().zip(&inputs) {
                binding.bind_input(*name, t).map_err(e)?;
            }
            let out = OrtTensor::<f32>::new(&dev_alloc, output_shape.clone()).map_err(e)?;
            allocators.push(dev_alloc);
            (inputs, Some(out))
        } else {
            (vec![], None)
        };
        let output_name = graph.contract().1[0];
        let mut staged_output = staged_output;
        let mut device_output = device_output;
        match device_output.as_mut() {
            Some(out) => binding.bind_output(output_name, out).map_err(e)?,
            None => binding.bind_output(output_name, &mut staged_output).map_err(e)?,
        }
        allocators.push(input_alloc);
        allocators.push(output_alloc);
        Ok(Bound {
            binding,
            names,
            shapes,
            staged,
            device: device_tensors,
            staged_output,
            device_output,
            output_shape,
            memory,
            graph,
            _allocators: allocators,
            session,
        })
    }

    /// Run on inputs of exactly the bound shapes.
    pub fn run(&mut self, inputs: &[Input<'_>]) -> Result<Tensor> {
        let graph = self.graph;
        let e = |x: ort::Error| err(graph, x);
        if inputs.len() != self.staged.len() {
            return Err(Error::graph(graph, format!("{} inputs given", inputs.len())));
        }
        for (k, input) in inputs.iter().enumerate() {
            let Input::F32(shape, data) = *input else {
                return Err(Error::graph(graph, "bound inputs are float32"));
            };
            if shape != self.shapes[k].as_slice() {
                return Err(Error::graph(
                    graph,
                    format!(
                        "input {} is {}, the bound buffer {}",
                        self.names[k],
                        shape_str(shape),
                        shape_str(&self.shapes[k])
                    ),
                ));
            }
            self.staged[k].extract_tensor_mut().1.copy_from_slice(data);
            match self.memory {
                Memory::Device => self.staged[k].copy_into(&mut self.device[k]).map_err(e)?,
                Memory::Host | Memory::Pinned => self.binding.bind_input(self.names[k], &self.staged[k]).map_err(e)?,
            }
        }
        let outputs = self.session.run_binding(&self.binding).map_err(e)?;
        drop(outputs);
        if let Some(out) = &self.device_output {
            out.copy_into(&mut self.staged_output).map_err(e)?;
        }
        let (_, data) = self.staged_output.extract_tensor();
        Ok(Tensor {
            shape: self.output_shape.clone(),
            data: data.to_vec(),
        })
    }
}
