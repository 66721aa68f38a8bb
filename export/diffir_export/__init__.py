"""Export DiffIR S2 checkpoints to verified ONNX model bundles for the `diffir` runtime."""

__version__ = "0.1.0"
