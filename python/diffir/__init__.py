"""diffir: DiffIR image restoration (super-resolution, deblurring, inpainting) for numpy arrays and image files.

    import numpy as np
    from PIL import Image
    import diffir

    pipeline = diffir.Pipeline()                      # the built-in x4 model; or a bundle folder / model name
    restored = pipeline.restore(np.asarray(Image.open("photo.png")))
    Image.fromarray(restored).save("photo_x4.png")

The runtime is the `diffir` CLI's: CPEN once per image, the reverse diffusion of the prior, the backbone tile by
tile, on onnxruntime (the onnxruntime package this one depends on, or onnxruntime-gpu for CUDA) or on
pure-Rust tract where onnxruntime is missing.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from . import _diffir, _errors
from ._diffir import ONNXRUNTIME_VERSION, Pipeline, __version__, models
from ._errors import *  # noqa: F403  (the exception classes, _errors.__all__)


def _onnxruntime_library() -> Path | None:
    """The shared library of the installed onnxruntime (or onnxruntime-gpu) package, found without importing it."""
    try:
        spec = importlib.util.find_spec("onnxruntime")
    except (ImportError, ValueError):
        return None
    for folder in (spec and spec.submodule_search_locations) or []:
        lib = Path(folder) / "capi" / f"libonnxruntime.so.{ONNXRUNTIME_VERSION}"
        if lib.is_file():
            return lib
    return None


_library = _onnxruntime_library()
if _library is not None and not os.environ.get("ORT_DYLIB_PATH"):
    _diffir._set_onnxruntime_library(str(_library))


def restore_file(
    input: str | os.PathLike,
    output: str | os.PathLike,
    mask=None,
    *,
    model: str | os.PathLike | None = None,
    seed: int = 0,
    outscale: float | None = None,
    tta: bool = False,
    overwrite: bool = False,
    progress=None,
    **options,
) -> None:
    """Restore one image file into `output` with the same bytes as `diffir restore`: `Pipeline(model, seed=seed,
    **options).restore_file(...)`. For many files, open one Pipeline and call its restore_file."""
    pipeline = Pipeline(model, seed=seed, **options)
    pipeline.restore_file(input, output, mask, outscale=outscale, tta=tta, overwrite=overwrite, progress=progress)


__all__ = ["ONNXRUNTIME_VERSION", "Pipeline", "__version__", "models", "restore_file", *_errors.__all__]
