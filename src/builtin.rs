//! The built-in x4 super-resolution model, embedded in the binary so that `--model` is optional.
//! onnx/diffir-x4-small/PROVENANCE.md says how it was trained and how well it does.

use std::path::PathBuf;

use crate::bundle::Bundle;
use crate::error::{Error, Result};

/// The built-in model's name.
pub const NAME: &str = "diffir-x4-small";

const YAML: &str = include_str!("../onnx/diffir-x4-small/bundle.yaml");
const FILES: [(&str, &[u8]); 5] = [
    ("cpen.onnx", include_bytes!("../onnx/diffir-x4-small/cpen.onnx")),
    ("denoiser.onnx", include_bytes!("../onnx/diffir-x4-small/denoiser.onnx")),
    ("backbone.onnx", include_bytes!("../onnx/diffir-x4-small/backbone.onnx")),
    (
        "cpen_features.onnx",
        include_bytes!("../onnx/diffir-x4-small/cpen_features.onnx"),
    ),
    (
        "cpen_head.onnx",
        include_bytes!("../onnx/diffir-x4-small/cpen_head.onnx"),
    ),
];

impl Bundle {
    /// The model embedded in the binary.
    pub fn builtin() -> Result<Bundle> {
        let origin = PathBuf::from(format!("built-in model {NAME}"));
        Bundle::from_parts(&origin, YAML, |file| {
            FILES
                .iter()
                .find(|(name, _)| *name == file)
                .map(|(name, bytes)| (origin.join(name), bytes.to_vec()))
                .ok_or_else(|| Error::bundle(&origin, format!("the built-in model has no file '{file}'")))
        })
    }
}
