"""Network definitions (inference only)."""

from diffir_export.arch.network import DiffIRS2

__all__ = ["DiffIRS2"]
