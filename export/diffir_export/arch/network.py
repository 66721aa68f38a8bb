"""The whole S2 network: G, CPEN and the denoiser, with the official state-dict keys, plus the IPR sampler."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from diffir_export.arch.cpen import CPEN, Denoiser
from diffir_export.arch.dirformer import DIRformer
from diffir_export.config import ModelConfig
from diffir_export.schedule import BUFFER_NAMES, schedule


class DiffIRS2(nn.Module):
    """Inference-only S2 network. `state_dict()` holds `G.*`, `condition.*` and `denoise.*`; the official
    aliases and schedule buffers are produced by `official_state_dict()`."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.G = DIRformer(cfg)
        self.condition = CPEN(cfg)
        self.denoise = Denoiser(cfg)
        sched = schedule(cfg.timesteps, cfg.linear_start, cfg.linear_end)
        # float32, as the official buffers are stored and used.
        self.register_buffer(
            "coef1", torch.tensor(sched["posterior_mean_coef1"], dtype=torch.float32), persistent=False
        )
        self.register_buffer(
            "coef2", torch.tensor(sched["posterior_mean_coef2"], dtype=torch.float32), persistent=False
        )

    def sample_ipr(self, image: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run CPEN once and the deterministic reverse chain from `noise`; returns (c, [x after each step])."""
        c = self.condition(image)
        x = noise
        steps = []
        for i in reversed(range(self.cfg.timesteps)):
            t = torch.full((x.shape[0],), i, dtype=torch.long)
            x0 = self.denoise(x, t, c)
            x = self.coef1[i] * x0 + self.coef2[i] * x
            steps.append(x)
        return c, steps

    def forward(self, image: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        _, steps = self.sample_ipr(image, noise)
        return self.G(image, steps[-1])

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict in the official order, with the `diffusion.*` buffers and aliases."""
        sd = dict(self.state_dict())
        sched = schedule(self.cfg.timesteps, self.cfg.linear_start, self.cfg.linear_end)
        for name in BUFFER_NAMES:
            sd[f"diffusion.{name}"] = torch.tensor(sched[name].astype(np.float32))
        for k, v in self.denoise.state_dict().items():
            sd[f"diffusion.model.{k}"] = v
        for k, v in self.condition.state_dict().items():
            sd[f"diffusion.condition.{k}"] = v
        return sd
