//! numpy arrays in and out: H×W (gray), H×W×1, H×W×3 or H×W×4 of uint8, uint16 or float32 become a picture
//! (read in place, strides and all: the conversion to the model's float32 is the only copy), and a result
//! becomes an array of the input's dtype and layout, as the CLI would write it.

use diffir::{Carry, Mask, Picture, Quantize, RestoredPicture, Sample};
use numpy::{Element, IntoPyArray, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::errors;
use crate::options::type_name;

/// The dtype of an input, kept for its result.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    U8,
    U16,
    F32,
}

/// What the result must look like: the input's dtype, and H×W for a 2-D input.
#[derive(Clone, Copy)]
pub struct Layout {
    pub dtype: Dtype,
    pub two_d: bool,
}

/// `image` (a numpy array, or anything `numpy.asarray` takes, such as a PIL image) as a picture.
pub fn picture(py: Python<'_>, image: &Bound<'_, PyAny>, max_pixels: u64) -> PyResult<(Picture, Layout)> {
    let array = as_array(py, image)?;
    if let Ok(a) = array.extract::<PyReadonlyArrayDyn<'_, u8>>() {
        return from_array(&a, Dtype::U8, max_pixels);
    }
    if let Ok(a) = array.extract::<PyReadonlyArrayDyn<'_, u16>>() {
        return from_array(&a, Dtype::U16, max_pixels);
    }
    if let Ok(a) = array.extract::<PyReadonlyArrayDyn<'_, f32>>() {
        return from_array(&a, Dtype::F32, max_pixels);
    }
    let dtype = array
        .getattr("dtype")
        .map_or_else(|_| type_name(&array), |d| d.to_string());
    Err(errors::input(format!(
        "the image's dtype is {dtype}; uint8, uint16 or float32 in [0, 1] (e.g. image.astype(numpy.float32)) are \
         restored"
    )))
}

/// `value` as a numpy array: itself if it is one, else `numpy.asarray(value)`.
fn as_array<'py>(py: Python<'py>, value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if value.cast::<numpy::PyUntypedArray>().is_ok() {
        return Ok(value.clone());
    }
    py.import("numpy")?
        .getattr("asarray")?
        .call1((value,))
        .map_err(|_| errors::input(format!("an image is a numpy array, not {}", type_name(value))))
}

fn from_array<T: Element + Sample>(
    a: &PyReadonlyArrayDyn<'_, T>,
    dtype: Dtype,
    max_pixels: u64,
) -> PyResult<(Picture, Layout)> {
    let shape = a.shape();
    let (h, w, c, two_d) = match *shape {
        [h, w] => (h, w, 1, true),
        [h, w, c] if matches!(c, 1 | 3 | 4) => (h, w, c, false),
        _ => {
            return Err(errors::input(format!(
                "the image's shape is {}; H×W (gray), H×W×1, H×W×3 or H×W×4 are restored",
                tuple(shape)
            )))
        }
    };
    let picture = Picture::from_samples(h, w, c, a.as_array().iter().copied(), max_pixels).map_err(errors::to_py)?;
    Ok((picture, Layout { dtype, two_d }))
}

/// An inpainting mask: a 2-D array (or H×W×1) where any value that is not zero is a hole.
pub fn mask(py: Python<'_>, mask: &Bound<'_, PyAny>) -> PyResult<Mask> {
    let array = as_array(py, mask)?;
    let numpy = py.import("numpy")?;
    let holes = numpy.getattr("not_equal")?.call1((&array, 0))?;
    let holes = holes.extract::<PyReadonlyArrayDyn<'_, bool>>().map_err(|_| {
        errors::input(format!(
            "the mask is {}; a numeric H×W array is a mask",
            type_name(&array)
        ))
    })?;
    let (h, w) = match *holes.shape() {
        [h, w] | [h, w, 1] => (h, w),
        ref s => {
            return Err(errors::input(format!(
                "the mask's shape is {}; H×W (non-zero is a hole) is a mask",
                tuple(s)
            )))
        }
    };
    Mask::from_holes(h, w, holes.as_array().iter().copied()).map_err(errors::to_py)
}

/// The result as an array of the input's dtype: gray stays gray, alpha is kept, uint8 is quantised as the
/// CLI writes 8-bit files for this task, uint16 as 16-bit files, float32 as `.npy` files (unrounded).
pub fn result<'py>(
    py: Python<'py>,
    done: &RestoredPicture,
    picture: &Picture,
    layout: Layout,
    quantize: Quantize,
) -> PyResult<Bound<'py, PyAny>> {
    let carry: Carry<'_> = done.carry(picture);
    match layout.dtype {
        Dtype::U8 => array::<u8>(py, done, &carry, quantize, layout.two_d),
        Dtype::U16 => array::<u16>(py, done, &carry, quantize, layout.two_d),
        Dtype::F32 => array::<f32>(py, done, &carry, quantize, layout.two_d),
    }
}

fn array<'py, T: Element + Sample>(
    py: Python<'py>,
    done: &RestoredPicture,
    carry: &Carry<'_>,
    quantize: Quantize,
    two_d: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let samples: Vec<T> = diffir::to_samples(&done.image, carry, quantize).map_err(errors::to_py)?;
    let (h, w) = (done.image.height, done.image.width);
    let channels = samples.len() / (h * w).max(1);
    let shape = if two_d && channels == 1 {
        vec![h, w]
    } else {
        vec![h, w, channels]
    };
    Ok(samples.into_pyarray(py).reshape(shape)?.into_any())
}

/// A shape as numpy prints it: (8, 8, 5), (8,).
fn tuple(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}
