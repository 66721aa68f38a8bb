"""Parameter-free tensor operations written with reshape/permute only, so every backend exports them alike.

PyTorch's pixel (un)shuffle channel order (out[c·r² + i·r + j] = in[c, y·r+i, x·r+j]) differs from ONNX
SpaceToDepth, and Resize/DepthToSpace support varies between runtimes; these forms export to plain
Reshape/Transpose/Expand nodes that every ONNX runtime runs identically.
"""

from __future__ import annotations

import torch


def pixel_unshuffle(x: torch.Tensor, r: int) -> torch.Tensor:
    if r == 1:
        return x
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // r, r, w // r, r)
    x = x.permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * r * r, h // r, w // r)


def pixel_shuffle(x: torch.Tensor, r: int) -> torch.Tensor:
    if r == 1:
        return x
    b, c, h, w = x.shape
    x = x.reshape(b, c // (r * r), r, r, h, w)
    x = x.permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // (r * r), h * r, w * r)


def upsample_nearest(x: torch.Tensor, r: int) -> torch.Tensor:
    """Nearest-neighbour upsampling by an integer factor (pixel replication)."""
    if r == 1:
        return x
    b, c, h, w = x.shape
    x = x[:, :, :, None, :, None].expand(b, c, h, r, w, r)
    return x.reshape(b, c, h * r, w * r)


class PixelUnshuffle(torch.nn.Module):
    def __init__(self, r: int) -> None:
        super().__init__()
        self.r = r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_unshuffle(x, self.r)


class PixelShuffle(torch.nn.Module):
    def __init__(self, r: int) -> None:
        super().__init__()
        self.r = r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle(x, self.r)
