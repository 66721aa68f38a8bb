"""CPEN_S2 (the condition network) and the denoiser MLP that together produce the IPR."""

from __future__ import annotations

import torch
from torch import nn

from diffir_export.arch.ops import pixel_unshuffle
from diffir_export.config import ModelConfig

SLOPE = 0.1


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=True),
            nn.LeakyReLU(SLOPE),
            nn.Conv2d(channels, channels, 3, padding=1, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


class CPEN(nn.Module):
    """LQ image → condition c (B, ipr_dim): convs, a global average pool, then a 2-layer MLP.

    `features` (everything before the pool) is purely convolutional; `head` (pool excluded) is the MLP.
    """

    def __init__(self, cfg: ModelConfig, extra_channels: int = 0) -> None:
        """`extra_channels`: stage 1's CPEN also sees the unshuffled ground truth (48 more channels)."""
        super().__init__()
        nf = cfg.n_feats
        in_ch = cfg.input_channels * cfg.cpen_unshuffle * cfg.cpen_unshuffle + extra_channels
        self.unshuffle = cfg.cpen_unshuffle
        layers: list[nn.Module] = [nn.Conv2d(in_ch, nf, 3, padding=1), nn.LeakyReLU(SLOPE)]
        layers += [ResBlock(nf) for _ in range(cfg.n_encoder_res)]
        layers += [
            nn.Conv2d(nf, 2 * nf, 3, padding=1),
            nn.LeakyReLU(SLOPE),
            nn.Conv2d(2 * nf, 2 * nf, 3, padding=1),
            nn.LeakyReLU(SLOPE),
            nn.Conv2d(2 * nf, 4 * nf, 3, padding=1),
            nn.LeakyReLU(SLOPE),
        ]
        self.E = nn.Sequential(*layers)
        d = 4 * nf
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.LeakyReLU(SLOPE), nn.Linear(d, d), nn.LeakyReLU(SLOPE))

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return self.E(pixel_unshuffle(image, self.unshuffle))

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.mlp(pooled)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image).mean(dim=(2, 3)))


class ResMLP(nn.Module):
    """Linear + LeakyReLU; despite the official name there is no residual connection."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.resmlp = nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(SLOPE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resmlp(x)


class Denoiser(nn.Module):
    """x̂0 = MLP([c ‖ t/(10·T) ‖ x]); t is the raw integer step index."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.ipr_dim
        self.max_period = float(cfg.timesteps * 10)
        self.resmlp = nn.Sequential(
            nn.Linear(2 * d + 1, d), nn.LeakyReLU(SLOPE), *(ResMLP(d) for _ in range(cfg.n_denoise_res))
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        t = (t.to(x.dtype) / self.max_period).reshape(-1, 1)
        return self.resmlp(torch.cat([c, t, x], dim=1))
