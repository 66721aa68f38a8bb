"""Type stubs of the native module (Rust, PyO3)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__version__: str
ONNXRUNTIME_VERSION: str

Progress = Callable[[int, int], object]

class Pipeline:
    """A DiffIR model opened on a backend, ready to restore images (from several threads at once).

    model: a bundle folder, an installed model's name (diffir.models()), or None for the built-in x4 model.
    The keywords match the library's RestoreOptions and the CLI's flags: backend ("auto", "tract", "ort",
    "ort-cpu", "ort-cuda", "ort-tensorrt", "ort-openvino", "ort-webgpu"), device (GPU index, list of them,
    or "0,1" / "all"), precision ("fp32", "fp16"),
    tile ("auto", 0 for the whole image, or pixels), tile_overlap, tile_batch, threads (None: every core),
    workers, max_memory (bytes, or "8G"), seed (the prior's initial noise).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        backend: str = "auto",
        device: int | str | Sequence[int] | None = None,
        precision: str = "fp32",
        tile: int | str = "auto",
        tile_overlap: int = 16,
        tile_batch: int | None = None,
        threads: int | None = None,
        workers: int | None = None,
        max_memory: int | str | None = None,
        seed: int = 0,
    ) -> None: ...
    def restore(
        self,
        image: npt.ArrayLike,
        mask: npt.ArrayLike | None = None,
        *,
        seed: int | None = None,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """Restore an H×W×3, H×W×4 or H×W array of uint8, uint16 or float32 in [0, 1]; the result has the
        input's dtype and channels, at the model's scale. progress(tiles_done, tiles_total) is called after
        each tile; raising from it cancels the restore."""
    def restore_file(
        self,
        input: str | os.PathLike[str],
        output: str | os.PathLike[str],
        mask: str | os.PathLike[str] | npt.ArrayLike | None = None,
        *,
        seed: int | None = None,
        outscale: float | None = None,
        tta: bool = False,
        overwrite: bool = False,
        progress: Progress | None = None,
    ) -> None:
        """Restore an image file into output with the same bytes as `diffir restore`."""
    @property
    def info(self) -> dict[str, Any]:
        """model, path, task, scale, backend, summary, and the plan (tile, tile_overlap, tile_batch, workers,
        threads, devices, precision, notes)."""

def models() -> list[dict[str, Any]]:
    """The installed models: name, path, and task and scale (or error)."""

def _set_onnxruntime_library(path: str) -> None: ...
