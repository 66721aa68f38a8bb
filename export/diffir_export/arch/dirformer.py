"""DIRformer: the IPR-modulated Restormer U-net (`G`), one definition for the SR, deblur and inpainting heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffir_export.arch.ops import PixelShuffle, PixelUnshuffle, pixel_unshuffle, upsample_nearest
from diffir_export.config import ModelConfig

LN_EPS = 1e-5


class LayerNormBody(nn.Module):
    """Per-pixel normalisation over channels of an NCHW tensor.

    WithBias: (x − μ)/√(σ² + ε)·w + b. BiasFree: x/√(σ² + ε)·w, σ² still mean-centred and x not centred.
    """

    def __init__(self, channels: int, with_bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if with_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = x.dtype != torch.float32  # reduced-precision graphs keep the channel reduction in float32
        y = x.float() if reduced else x
        mu = y.mean(dim=1, keepdim=True)
        var = (y - mu).pow(2).mean(dim=1, keepdim=True)
        w = self.weight.view(1, -1, 1, 1)
        if self.bias is None:
            y = y / torch.sqrt(var + LN_EPS) * w
        else:
            y = (y - mu) / torch.sqrt(var + LN_EPS) * w + self.bias.view(1, -1, 1, 1)
        return y.to(x.dtype) if reduced else y


class LayerNorm(nn.Module):
    def __init__(self, channels: int, layernorm_type: str) -> None:
        super().__init__()
        self.body = LayerNormBody(channels, with_bias=layernorm_type == "WithBias")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def modulate(x: torch.Tensor, kernel: nn.Module, ipr: torch.Tensor) -> torch.Tensor:
    """x·γ + β with (γ, β) = Linear(IPR) split along channels."""
    c = x.shape[1]
    k = kernel(ipr).view(-1, 2 * c, 1, 1)
    gamma, beta = k[:, :c], k[:, c:]
    return x * gamma + beta


class Attention(nn.Module):
    """MDTA: channel ("transposed") attention; q and k are L2-normalised over H·W."""

    def __init__(self, dim: int, heads: int, bias: bool, ipr_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.kernel = nn.Sequential(nn.Linear(ipr_dim, dim * 2, bias=False))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = modulate(x, self.kernel, ipr)
        qkv = self.qkv_dwconv(self.qkv(x))
        q, k, v = qkv[:, :c], qkv[:, c : 2 * c], qkv[:, 2 * c :]
        q = q.reshape(b, self.heads, c // self.heads, h * w)
        k = k.reshape(b, self.heads, c // self.heads, h * w)
        v = v.reshape(b, self.heads, c // self.heads, h * w)
        reduced = v.dtype != torch.float32  # reduced precision: the H·W reductions and the softmax stay float32
        temperature = self.temperature.float() if reduced else self.temperature
        if reduced:
            q, k = q.float(), k.float()
        q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        k = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        attn = ((q @ k.transpose(-2, -1)) * temperature).softmax(dim=-1)
        if reduced:
            attn = attn.to(v.dtype)
        out = (attn @ v).reshape(b, c, h, w)
        return self.project_out(out)


class FeedForward(nn.Module):
    """GDFN: 1x1 → depthwise 3x3 → GELU(x1)·x2 → 1x1."""

    def __init__(self, dim: int, hidden: int, bias: bool, ipr_dim: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)
        self.kernel = nn.Sequential(nn.Linear(ipr_dim, dim * 2, bias=False))

    def forward(self, x: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        x = modulate(x, self.kernel, ipr)
        x = self.dwconv(self.project_in(x))
        x1, x2 = x[:, : self.hidden], x[:, self.hidden :]
        return self.project_out(F.gelu(x1) * x2)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, cfg.layernorm_type)
        self.attn = Attention(dim, heads, cfg.bias, cfg.ipr_dim)
        self.norm2 = LayerNorm(dim, cfg.layernorm_type)
        self.ffn = FeedForward(dim, cfg.hidden(dim), cfg.bias, cfg.ipr_dim)

    def forward(self, x: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), ipr)
        return x + self.ffn(self.norm2(x), ipr)


class Stage(nn.Sequential):
    """A run of transformer blocks sharing one IPR."""

    def __init__(self, count: int, dim: int, heads: int, cfg: ModelConfig) -> None:
        super().__init__(*(TransformerBlock(dim, heads, cfg) for _ in range(count)))

    def forward(self, x: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for block in self:
            x = block(x, ipr)
        return x


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_channels: int, dim: int, bias: bool) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=3, padding=1, bias=False), PixelUnshuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels * 2, kernel_size=3, padding=1, bias=False), PixelShuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class DIRformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.family = cfg.family
        self.scale = cfg.scale
        self.unshuffle = cfg.g_unshuffle
        d, nb, hd = cfg.dim, cfg.num_blocks, cfg.heads
        in_ch = cfg.input_channels * self.unshuffle * self.unshuffle
        self.patch_embed = OverlapPatchEmbed(in_ch, d, cfg.bias)
        self.encoder_level1 = Stage(nb[0], d, hd[0], cfg)
        self.down1_2 = Downsample(d)
        self.encoder_level2 = Stage(nb[1], 2 * d, hd[1], cfg)
        self.down2_3 = Downsample(2 * d)
        self.encoder_level3 = Stage(nb[2], 4 * d, hd[2], cfg)
        self.down3_4 = Downsample(4 * d)
        self.latent = Stage(nb[3], 8 * d, hd[3], cfg)
        self.up4_3 = Upsample(8 * d)
        self.reduce_chan_level3 = nn.Conv2d(8 * d, 4 * d, kernel_size=1, bias=cfg.bias)
        self.decoder_level3 = Stage(nb[2], 4 * d, hd[2], cfg)
        self.up3_2 = Upsample(4 * d)
        self.reduce_chan_level2 = nn.Conv2d(4 * d, 2 * d, kernel_size=1, bias=cfg.bias)
        self.decoder_level2 = Stage(nb[1], 2 * d, hd[1], cfg)
        self.up2_1 = Upsample(2 * d)
        self.decoder_level1 = Stage(nb[0], 2 * d, hd[0], cfg)
        if cfg.has_refinement:
            self.refinement = Stage(cfg.num_refinement_blocks, 2 * d, hd[0], cfg)
        if cfg.family == "sr":
            f = 2 * d
            self.tail = nn.Sequential(
                nn.Sequential(
                    nn.Conv2d(f, 4 * f, kernel_size=3, padding=1, bias=True),
                    PixelShuffle(2),
                    nn.Conv2d(f, 4 * f, kernel_size=3, padding=1, bias=True),
                    PixelShuffle(2),
                ),
                nn.Conv2d(f, 3, kernel_size=3, padding=1, bias=True),
            )
        else:
            self.output = nn.Conv2d(2 * d, 3, kernel_size=3, padding=1, bias=cfg.bias)

    def forward(self, image: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        x = pixel_unshuffle(image, self.unshuffle)
        enc1 = self.encoder_level1(self.patch_embed(x), ipr)
        enc2 = self.encoder_level2(self.down1_2(enc1), ipr)
        enc3 = self.encoder_level3(self.down2_3(enc2), ipr)
        lat = self.latent(self.down3_4(enc3), ipr)
        dec3 = self.reduce_chan_level3(torch.cat([self.up4_3(lat), enc3], dim=1))
        dec3 = self.decoder_level3(dec3, ipr)
        dec2 = self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], dim=1))
        dec2 = self.decoder_level2(dec2, ipr)
        dec1 = self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], dim=1), ipr)
        if self.family == "sr":
            dec1 = self.refinement(dec1, ipr)
            return self.tail(dec1) + upsample_nearest(image, self.scale)
        if self.family == "deblur":
            dec1 = self.refinement(dec1, ipr)
            return self.output(dec1) + image
        return self.output(dec1)
