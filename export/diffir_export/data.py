"""Training and validation data for x4 super-resolution: real photographs, box-reduced, bicubic-degraded."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

LONG_SIDE = 1280


def box_reduce(img: Image.Image, lossy: bool) -> Image.Image:
    """Integer box reduction so the long side is ≤ LONG_SIDE; lossy files are reduced at least 2× so that
    compression artefacts do not become ground truth."""
    w, h = img.size
    factor = max(1, math.ceil(max(w, h) / LONG_SIDE))
    if lossy:
        factor = max(factor, 2)
    if factor == 1:
        return img
    w2, h2 = w // factor, h // factor
    img = img.crop((0, 0, w2 * factor, h2 * factor))
    return img.reduce(factor)


def load_hr(path: Path) -> np.ndarray:
    """A ground-truth photo as uint8 H×W×3, box-reduced."""
    img = Image.open(path)
    lossy = img.format in ("JPEG", "WEBP")
    return np.asarray(box_reduce(img.convert("RGB"), lossy))


def mod_crop(hr: np.ndarray, scale: int) -> np.ndarray:
    h, w = hr.shape[:2]
    return hr[: h - h % scale, : w - w % scale]


def bicubic_down(hr: np.ndarray, scale: int) -> np.ndarray:
    """PIL bicubic (antialiased) downscale of a uint8 image by an integer factor."""
    h, w = hr.shape[:2]
    return np.asarray(Image.fromarray(hr).resize((w // scale, h // scale), Image.BICUBIC))


def bicubic_up(lr: np.ndarray, scale: int) -> np.ndarray:
    h, w = lr.shape[:2]
    return np.asarray(Image.fromarray(lr).resize((w * scale, h * scale), Image.BICUBIC))


def jpeg_round_trip(rgb_u8: np.ndarray, quality: int) -> np.ndarray:
    """The image after saving it as a JPEG of `quality` (PIL's encoder, 4:2:0 chroma) and decoding it."""
    buf = io.BytesIO()
    Image.fromarray(rgb_u8).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@dataclass(frozen=True)
class Degradation:
    """Mild real-input degradations of the LR training image (the HR target stays clean).

    With probability `noise_prob`, Gaussian noise of σ uniform in [1, `noise_sigma`] (0–255 scale) is added to
    the LR image (sensor noise); then, with probability `jpeg_prob`, it is saved as a JPEG of a quality uniform
    in [`jpeg_min`, `jpeg_max`] and decoded, as users' photos usually are.
    """

    jpeg_prob: float = 0.0
    jpeg_min: int = 70
    jpeg_max: int = 95
    noise_prob: float = 0.0
    noise_sigma: float = 4.0

    def __post_init__(self) -> None:
        for name in ("jpeg_prob", "noise_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 1 <= self.jpeg_min <= self.jpeg_max <= 100:
            got = f"{self.jpeg_min}..{self.jpeg_max}"
            raise ValueError(f"JPEG qualities must satisfy 1 <= min <= max <= 100, got {got}")
        if self.noise_sigma < 1.0:
            raise ValueError(f"noise_sigma must be at least 1, got {self.noise_sigma}")

    def apply(self, lr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.noise_prob and rng.random() < self.noise_prob:
            sigma = rng.uniform(1.0, self.noise_sigma)
            noisy = lr.astype(np.float32) + rng.normal(0.0, sigma, lr.shape).astype(np.float32)
            lr = np.clip(np.round(noisy), 0, 255).astype(np.uint8)
        if self.jpeg_prob and rng.random() < self.jpeg_prob:
            lr = jpeg_round_trip(lr, int(rng.integers(self.jpeg_min, self.jpeg_max + 1)))
        return lr


def read_list(root: Path, name: str) -> list[Path]:
    return [root / line.strip() for line in (root / name).read_text().splitlines() if line.strip()]


class PatchSampler:
    """Random HR crops (flips and 90° turns) with their bicubic LR (optionally degraded), from photos in memory."""

    def __init__(
        self,
        images: list[np.ndarray],
        hr_patch: int,
        scale: int,
        seed: int,
        degradation: Degradation | None = None,
    ) -> None:
        self.images = [im for im in images if min(im.shape[:2]) >= hr_patch]
        if not self.images:
            raise ValueError(f"no training image is at least {hr_patch} px on each side")
        weights = np.array([im.shape[0] * im.shape[1] for im in self.images], dtype=np.float64)
        self.p = weights / weights.sum()
        self.hr_patch, self.scale = hr_patch, scale
        self.rng = np.random.default_rng(seed)
        self.degradation = degradation or Degradation()

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(LR, HR) float32 NCHW batches in [0, 1]."""
        lrs, hrs = [], []
        for _ in range(n):
            im = self.images[self.rng.choice(len(self.images), p=self.p)]
            y = self.rng.integers(0, im.shape[0] - self.hr_patch + 1)
            x = self.rng.integers(0, im.shape[1] - self.hr_patch + 1)
            hr = im[y : y + self.hr_patch, x : x + self.hr_patch]
            if self.rng.random() < 0.5:
                hr = hr[:, ::-1]
            hr = np.ascontiguousarray(np.rot90(hr, self.rng.integers(0, 4)))
            lrs.append(self.degradation.apply(bicubic_down(hr, self.scale), self.rng))
            hrs.append(hr)
        to = lambda a: np.stack(a).transpose(0, 3, 1, 2).astype(np.float32) / 255.0  # noqa: E731
        return to(lrs), to(hrs)
