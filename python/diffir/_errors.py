"""The exceptions diffir raises. Every message is the runtime's own, as the CLI prints it after "error: "."""

from __future__ import annotations


class DiffirError(Exception):
    """Anything diffir could not do."""


class ModelError(DiffirError):
    """The model bundle is malformed, or one of its graphs could not be loaded or run."""


class InputError(DiffirError, ValueError):
    """An image, mask or argument the model cannot take (also a ValueError)."""


class OutOfMemoryError(DiffirError, MemoryError):
    """A device ran out of memory, even after the pipeline retried with smaller tiles (also a MemoryError)."""


class BackendError(DiffirError, RuntimeError):
    """The backend asked for cannot start (library or provider missing), or a remote server failed."""


class FileError(DiffirError, OSError):
    """A file could not be read or written, or the output exists and overwrite was not given."""


class CancelledError(DiffirError):
    """The restore was cancelled."""


__all__ = [
    "BackendError",
    "CancelledError",
    "DiffirError",
    "FileError",
    "InputError",
    "ModelError",
    "OutOfMemoryError",
]
