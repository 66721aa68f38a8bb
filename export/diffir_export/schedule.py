"""The reverse-diffusion schedule of DiffIR's IPR sampler, computed in float64 from its formula.

betas are the squares of a linspace between sqrt(linear_start) and sqrt(linear_end) (the upstream code calls
this the "linear" schedule). The names of the buffers match the 12 persistent `diffusion.*` buffers that an
official checkpoint stores.
"""

from __future__ import annotations

import numpy as np

BUFFER_NAMES = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)


def schedule(timesteps: int, linear_start: float, linear_end: float) -> dict[str, np.ndarray]:
    """All schedule buffers in float64, keyed by their official names."""
    betas = np.linspace(np.sqrt(linear_start), np.sqrt(linear_end), timesteps, dtype=np.float64) ** 2
    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas)
    alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    return {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
        "log_one_minus_alphas_cumprod": np.log(1.0 - alphas_cumprod),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod - 1.0),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
    }


def endpoints_from_betas(betas: np.ndarray) -> tuple[int, float, float]:
    """Recover (timesteps, linear_start, linear_end) from stored float32 betas.

    The endpoints are the first and last beta; float32 storage is undone by taking the shortest decimal
    that rounds to the stored value.
    """
    betas = np.asarray(betas, dtype=np.float32).reshape(-1)
    if betas.size == 0:
        raise ValueError("empty betas")
    start = float(np.format_float_positional(betas[0], unique=True))
    end = float(np.format_float_positional(betas[-1], unique=True))
    return int(betas.size), start, end
