"""Golden references for the runtime's tests: whole-image inference exactly as the official scripts do it,
with every graph's inputs and outputs saved alongside."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from diffir_export.arch import DiffIRS2


def pad_amount(n: int, multiple: int) -> int:
    return (multiple - n % multiple) % multiple


def pad_image(hwc: np.ndarray, multiple: int, mode: str) -> np.ndarray:
    """Pad bottom/right to a multiple. 'reflect' is PyTorch's (edge not repeated), 'symmetric' NumPy's."""
    ph, pw = pad_amount(hwc.shape[0], multiple), pad_amount(hwc.shape[1], multiple)
    if ph == 0 and pw == 0:
        return hwc
    widths = [(0, ph), (0, pw)] + [(0, 0)] * (hwc.ndim - 2)
    if mode == "symmetric":
        return np.pad(hwc, widths, mode="symmetric")
    # np.pad 'reflect' equals PyTorch 'reflect' and also handles pads larger than the image by repetition.
    return np.pad(hwc, widths, mode="reflect")


def network_input(model: DiffIRS2, image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """(H, W, 3) image (+ mask) → padded (1, C, Hp, Wp) float32 network input."""
    cfg = model.cfg
    if cfg.family == "inpaint":
        if mask is None:
            raise ValueError("inpainting needs a mask")
        m = (mask > 0).astype(np.float32)[..., None]
        padded = pad_image(np.concatenate([image, m], axis=2), cfg.size_multiple, cfg.padding)
        rgb, m = padded[..., :3], padded[..., 3:]
        x = np.concatenate([rgb * (1 - m), m], axis=2)
    else:
        x = pad_image(image, cfg.size_multiple, cfg.padding)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None]).astype(np.float32)


def run_pipeline(model: DiffIRS2, image: np.ndarray, noise: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """Whole-image inference with every intermediate: the contract the Rust pipeline is tested against."""
    cfg = model.cfg
    h, w = image.shape[:2]
    x = network_input(model, image, mask)
    xt = torch.from_numpy(x)
    nt = torch.from_numpy(noise.astype(np.float32))
    with torch.no_grad():
        c, steps = model.sample_ipr(xt, nt)
        raw = model.G(xt, steps[-1])
        x_in = [nt] + steps[:-1]
        x0 = [
            model.denoise(xi, torch.full((1,), t, dtype=torch.long), c)
            for xi, t in zip(x_in, reversed(range(cfg.timesteps)), strict=True)
        ]
    pred = raw[0].numpy().transpose(1, 2, 0)[: h * cfg.scale, : w * cfg.scale]
    if cfg.family == "inpaint":
        m = (mask > 0).astype(np.float32)[..., None]
        out = np.clip(m * pred + (1 - m) * image, 0, 1)
        out_u8 = np.clip(out * 255, 0, 255).astype(np.uint8)
    else:
        out = np.clip(pred, 0, 1)
        out_u8 = np.round(out * 255).astype(np.uint8)
    result = {
        "image": image.astype(np.float32),
        "noise": noise.astype(np.float32),
        "c": c.numpy(),
        "iprs": torch.stack(steps).numpy(),
        "ipr": steps[-1].numpy(),
        "output": out.astype(np.float32),
        "output_u8": out_u8,
        # graph inputs and outputs
        "cpen_image": x,
        "denoiser_x": torch.stack(x_in).numpy(),
        "denoiser_t": np.arange(cfg.timesteps - 1, -1, -1, dtype=np.int64),
        "denoiser_x0": torch.stack(x0).numpy(),
        "backbone_output": raw.numpy(),
    }
    if mask is not None:
        result["mask"] = (mask > 0).astype(np.float32)
    return result


def write_reference(path: Path, model: DiffIRS2, image: np.ndarray, noise: np.ndarray, mask=None) -> dict:
    ref = run_pipeline(model, image, noise, mask)
    np.savez_compressed(path, **ref)
    return ref
