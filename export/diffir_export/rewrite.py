"""Export-time rewrite of DIRformer that computes the same function with different GPU kernels.

`group_depthwise(G, k)`: every depthwise 3x3 convolution becomes a grouped convolution of k channels per group
whose weights are block-diagonal (each output channel still reads only its own input channel; the other k - 1
taps are exact zeros): the same function with k times the multiply-adds, which cuDNN runs with its grouped
(matrix-unit) kernels instead of its depthwise ones. The FFN's hidden width (281 for the official SR models, a
prime) is zero-padded up to a multiple of k: the padded channels are exactly zero through project_in, the
depthwise conv and GELU(x1)·x2, and project_out ignores them (zero columns), so the output is unchanged up to
float32 summation order. Measured on an H200 (BENCHMARKS.md), onnxruntime's depthwise kernels were already
faster than PyTorch's and the grouped forms did not help, so bundles are exported without it;
scripts/studies/gpu_study.py --grouped times it again.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from diffir_export.arch.dirformer import Attention, DIRformer, FeedForward


def _grouped(conv: nn.Conv2d, per_group: int, rows: list[int], channels: int) -> nn.Conv2d:
    """A block-diagonal grouped copy of depthwise `conv` with `channels` channels, its channel i moved to rows[i]
    (the other channels are exact zeros)."""
    old = conv.weight.detach()  # (C, 1, 3, 3)
    new = nn.Conv2d(channels, channels, 3, padding=1, groups=channels // per_group, bias=conv.bias is not None)
    w = torch.zeros(channels, per_group, 3, 3, dtype=old.dtype)
    idx = torch.tensor(rows)
    w[idx, idx % per_group] = old[:, 0]
    new.weight = nn.Parameter(w)
    if conv.bias is not None:
        b = torch.zeros(channels, dtype=old.dtype)
        b[idx] = conv.bias.detach()
        new.bias = nn.Parameter(b)
    return new


def _pad_rows(conv: nn.Conv2d, rows: list[int], total: int) -> nn.Conv2d:
    """1x1 conv whose output channel i moves to rows[i] of a zero-initialised conv with `total` outputs."""
    new = nn.Conv2d(conv.in_channels, total, 1, bias=conv.bias is not None)
    w = torch.zeros(total, conv.in_channels, 1, 1, dtype=conv.weight.dtype)
    w[rows] = conv.weight.detach()
    new.weight = nn.Parameter(w)
    if conv.bias is not None:
        b = torch.zeros(total, dtype=conv.weight.dtype)
        b[rows] = conv.bias.detach()
        new.bias = nn.Parameter(b)
    return new


def _pad_cols(conv: nn.Conv2d, total: int) -> nn.Conv2d:
    new = nn.Conv2d(total, conv.out_channels, 1, bias=conv.bias is not None)
    w = torch.zeros(conv.out_channels, total, 1, 1, dtype=conv.weight.dtype)
    w[:, : conv.in_channels] = conv.weight.detach()
    new.weight = nn.Parameter(w)
    if conv.bias is not None:
        new.bias = nn.Parameter(conv.bias.detach().clone())
    return new


def group_depthwise(g: DIRformer, per_group: int) -> DIRformer:
    """Rewrite `g` in place (see the module doc) and return it. `per_group` must be a power of two."""
    if per_group < 1 or per_group & (per_group - 1):
        raise ValueError(f"channels per group must be a power of two, got {per_group}")
    if per_group == 1:
        return g
    for m in g.modules():
        if isinstance(m, Attention):
            c = m.qkv_dwconv.in_channels
            k = math.gcd(per_group, c)
            m.qkv_dwconv = _grouped(m.qkv_dwconv, k, list(range(c)), c)
        elif isinstance(m, FeedForward):
            h = m.hidden
            hp = -(-h // per_group) * per_group
            rows = list(range(h)) + list(range(hp, hp + h))
            m.project_in = _pad_rows(m.project_in, rows, 2 * hp)
            m.dwconv = _grouped(m.dwconv, per_group, rows, 2 * hp)
            m.project_out = _pad_cols(m.project_out, hp)
            m.hidden = hp
    return g
