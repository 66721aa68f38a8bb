"""PSNR and SSIM on the BT.601 luma channel with a border shave (the usual SR protocol)."""

from __future__ import annotations

import numpy as np


def luma(rgb_u8: np.ndarray) -> np.ndarray:
    """BT.601 Y in [16, 235] from uint8 RGB (as MATLAB's rgb2ycbcr), float64."""
    rgb = rgb_u8.astype(np.float64) / 255.0
    return 16.0 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]


def shave(a: np.ndarray, border: int) -> np.ndarray:
    return a[border:-border, border:-border] if border > 0 else a


def psnr_y(a_u8: np.ndarray, b_u8: np.ndarray, border: int) -> float:
    ya, yb = shave(luma(a_u8), border), shave(luma(b_u8), border)
    mse = np.mean((ya - yb) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _gaussian_filter(img: np.ndarray, sigma: float = 1.5, size: int = 11) -> np.ndarray:
    ax = np.arange(size) - size // 2
    k = np.exp(-(ax**2) / (2 * sigma**2))
    k /= k.sum()
    # 'valid' separable convolution, as the reference SSIM implementation does.
    tmp = np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid"), 1, img)
    return np.apply_along_axis(lambda c: np.convolve(c, k, mode="valid"), 0, tmp)


def ssim_y(a_u8: np.ndarray, b_u8: np.ndarray, border: int) -> float:
    """SSIM (Wang et al. 2004: 11×11 Gaussian, σ = 1.5, K1 = 0.01, K2 = 0.03) on Y."""
    x, y = shave(luma(a_u8), border), shave(luma(b_u8), border)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = _gaussian_filter(x), _gaussian_filter(y)
    sxx = _gaussian_filter(x * x) - mx**2
    syy = _gaussian_filter(y * y) - my**2
    sxy = _gaussian_filter(x * y) - mx * my
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(m.mean())
