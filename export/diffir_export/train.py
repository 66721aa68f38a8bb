"""Train a DiffIR x4 SR model with the paper's two-stage recipe, on CPU, resumably.

Stage 1: CPEN_S1 sees LQ and the unshuffled GT, its IPR drives the DIRformer; L1 loss.
Stage 2: the backbone starts from stage 1; CPEN_S2 and the denoiser learn to produce stage 1's IPR from the
LQ alone. The chain starts from q_sample(IPR_S1, T−1) and runs the T reverse steps; loss = L1(pixels) +
L1(IPR_S2, IPR_S1). A short encoder-only warm-up (KD loss alone) comes first.

Checkpoints are written in the official basicsr layout ({'params', 'params_ema'}), so the normal exporter
turns the result into a bundle:

    python -m diffir_export.train --data PHOTOS --work WORK --config configs/builtin/sr_x4_small.yaml
    python -m diffir_export export --checkpoint WORK/s2.pth --out onnx/diffir-x4
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffir_export.arch import DiffIRS2
from diffir_export.arch.cpen import CPEN
from diffir_export.arch.dirformer import DIRformer
from diffir_export.arch.ops import pixel_unshuffle
from diffir_export.config import ModelConfig
from diffir_export.data import Degradation, PatchSampler, bicubic_down, bicubic_up, load_hr, mod_crop, read_list
from diffir_export.metrics import psnr_y
from diffir_export.schedule import schedule


class DiffIRS1(nn.Module):
    """Stage-1 network: G plus CPEN_S1 (`E`), which sees LQ and unshuffle-4 of the ground truth."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.G = DIRformer(cfg)
        self.E = CPEN(cfg, extra_channels=3 * 16)

    def ipr(self, lq: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        x = torch.cat([pixel_unshuffle(lq, self.cfg.cpen_unshuffle), pixel_unshuffle(gt, 4)], dim=1)
        return self.E.head(self.E.E(x).mean(dim=(2, 3)))

    def forward(self, lq: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return self.G(lq, self.ipr(lq, gt))


def training_chain(model: DiffIRS2, lq: torch.Tensor, ipr_s1: torch.Tensor) -> torch.Tensor:
    """Stage 2's chain: from q_sample(IPR_S1, T−1), T reverse steps conditioned on CPEN_S2(LQ)."""
    cfg = model.cfg
    sched = schedule(cfg.timesteps, cfg.linear_start, cfg.linear_end)
    t_last = cfg.timesteps - 1
    a = float(np.sqrt(sched["alphas_cumprod"][t_last]))
    b = float(np.sqrt(1.0 - sched["alphas_cumprod"][t_last]))
    x = a * ipr_s1 + b * torch.randn_like(ipr_s1)
    c = model.condition(lq)
    for i in reversed(range(cfg.timesteps)):
        t = torch.full((x.shape[0],), i, dtype=torch.long)
        x = model.coef1[i] * model.denoise(x, t, c) + model.coef2[i] * x
    return x


class EMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for s, p in zip(self.shadow.parameters(), model.parameters(), strict=True):
            s.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)


def validation_set(root: Path, hr_crop: int, scale: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Centre crops of the val photos (protocol as the final evaluation: box-reduce, mod-crop, PIL bicubic)."""
    out = []
    for path in read_list(root, "val.txt"):
        hr = mod_crop(load_hr(path), scale)
        h, w = hr.shape[:2]
        unit = scale * 8
        c = min(hr_crop, h, w) // unit * unit
        y, x = (h - c) // 2 // scale * scale, (w - c) // 2 // scale * scale
        hr = hr[y : y + c, x : x + c]
        out.append((bicubic_down(hr, scale), hr))
    return out


@torch.no_grad()
def validate(restore, val: list[tuple[np.ndarray, np.ndarray]], scale: int) -> tuple[float, float]:
    """Mean PSNR-Y of `restore(lr_tensor) -> sr_tensor` and of bicubic, 4-px shave."""
    ours, bic = [], []
    for lr, hr in val:
        x = torch.from_numpy(lr.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
        y = torch.from_numpy(hr.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
        sr = restore(x, y)[..., : hr.shape[0], : hr.shape[1]]
        sr_u8 = np.round(sr[0].clamp(0, 1).numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
        ours.append(psnr_y(sr_u8, hr, scale))
        bic.append(psnr_y(bicubic_up(lr, scale), hr, scale))
    return float(np.mean(ours)), float(np.mean(bic))


def official_s1_state(model: DiffIRS1) -> dict:
    return {"params": model.state_dict()}


def official_s2_state(model: DiffIRS2, ema: DiffIRS2) -> dict:
    return {"params": model.official_state_dict(), "params_ema": ema.official_state_dict()}


def lr_at(step: int, total: int, base: float, warmup: int = 100) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def log(work: Path, msg: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {msg}"
    print(line, flush=True)
    with open(work / "train.log", "a") as f:
        f.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="photo folder with train.txt / val.txt")
    p.add_argument("--work", required=True, type=Path, help="checkpoints, state and logs")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--stage1-iters", type=int, default=3000)
    p.add_argument("--warmup-iters", type=int, default=300, help="stage 2 encoder-only iterations")
    p.add_argument("--stage2-iters", type=int, default=3000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=128, help="HR patch size")
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--ema", type=float, default=0.998)
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--val-crop", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    d = Degradation()
    p.add_argument("--jpeg-prob", type=float, default=d.jpeg_prob,
                   help=f"share of LR crops saved as JPEG (quality {d.jpeg_min}-{d.jpeg_max})")  # fmt: skip
    p.add_argument("--noise-prob", type=float, default=d.noise_prob,
                   help=f"share of LR crops with Gaussian noise (σ 1-{d.noise_sigma:g})")  # fmt: skip
    args = p.parse_args(argv)
    try:
        degradation = Degradation(jpeg_prob=args.jpeg_prob, noise_prob=args.noise_prob)
    except ValueError as e:
        p.error(str(e))

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = ModelConfig.load(args.config)
    scale = cfg.scale
    args.work.mkdir(parents=True, exist_ok=True)
    state_path = args.work / "state.pt"

    s1 = DiffIRS1(cfg)
    s2 = DiffIRS2(cfg)
    ema = EMA(s2, args.ema)
    opt1 = torch.optim.Adam(s1.parameters(), lr=args.lr, betas=(0.9, 0.99))
    opt_enc = torch.optim.Adam(list(s2.condition.parameters()) + list(s2.denoise.parameters()), lr=args.lr)
    opt2 = torch.optim.Adam(s2.parameters(), lr=args.lr / 2, betas=(0.9, 0.99))
    step, history, started = 0, [], time.time()
    elapsed_before = 0.0
    if state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=False)
        s1.load_state_dict(st["s1"])
        s2.load_state_dict(st["s2"])
        ema.shadow.load_state_dict(st["ema"])
        opt1.load_state_dict(st["opt1"])
        opt_enc.load_state_dict(st["opt_enc"])
        opt2.load_state_dict(st["opt2"])
        step, history, elapsed_before = st["step"], st["history"], st["elapsed"]
        torch.set_rng_state(st["torch_rng"])
        log(args.work, f"resumed at step {step}")

    log(args.work, f"loading photos from {args.data}")
    train_imgs = [load_hr(pth) for pth in read_list(args.data, "train.txt")]
    sampler = PatchSampler(train_imgs, args.patch, scale, seed=args.seed + step, degradation=degradation)
    val = validation_set(args.data, args.val_crop, scale)
    n1, nw, n2 = args.stage1_iters, args.warmup_iters, args.stage2_iters
    total = n1 + nw + n2
    log(args.work, f"{len(sampler.images)} train photos, {len(val)} val crops; steps {n1}+{nw}+{n2}; {degradation}")

    def save(final: bool = False) -> None:
        elapsed = elapsed_before + time.time() - started
        torch.save(
            {
                "s1": s1.state_dict(),
                "s2": s2.state_dict(),
                "ema": ema.shadow.state_dict(),
                "opt1": opt1.state_dict(),
                "opt_enc": opt_enc.state_dict(),
                "opt2": opt2.state_dict(),
                "step": step,
                "history": history,
                "elapsed": elapsed,
                "torch_rng": torch.get_rng_state(),
            },
            str(state_path) + ".tmp",
        )
        Path(str(state_path) + ".tmp").replace(state_path)
        torch.save(official_s1_state(s1), args.work / "s1.pth")
        if step > n1:
            torch.save(official_s2_state(s2, ema.shadow), args.work / "s2.pth")
        (args.work / "history.json").write_text(json.dumps({"elapsed_s": elapsed, "history": history}, indent=1))

    noise_gen = torch.Generator().manual_seed(1234)
    val_noise = torch.randn(1, cfg.ipr_dim, generator=noise_gen)
    t0 = time.time()
    while step < total:
        lq_np, gt_np = sampler.batch(args.batch)
        lq, gt = torch.from_numpy(lq_np), torch.from_numpy(gt_np)
        if step < n1:
            stage = "s1"
            for g in opt1.param_groups:
                g["lr"] = lr_at(step, n1, args.lr)
            s1.train()
            loss = F.l1_loss(s1(lq, gt), gt)
            opt1.zero_grad()
            loss.backward()
            opt1.step()
            parts = f"l1 {loss.item():.4f}"
        else:
            if step == n1:
                s2.G.load_state_dict(s1.G.state_dict())
                ema.shadow.load_state_dict(s2.state_dict())
            s1.eval()
            with torch.no_grad():
                ipr_s1 = s1.ipr(lq, gt)
            s2.train()
            ipr_s2 = training_chain(s2, lq, ipr_s1)
            kd = F.l1_loss(ipr_s2, ipr_s1)
            if step < n1 + nw:
                stage = "warmup"
                for g in opt_enc.param_groups:
                    g["lr"] = lr_at(step - n1, nw, args.lr, warmup=20)
                opt_enc.zero_grad()
                kd.backward()
                opt_enc.step()
                parts = f"kd {kd.item():.4f}"
            else:
                stage = "s2"
                for g in opt2.param_groups:
                    g["lr"] = lr_at(step - n1 - nw, n2, args.lr / 2, warmup=50)
                pix = F.l1_loss(s2.G(lq, ipr_s2), gt)
                loss = pix + kd
                opt2.zero_grad()
                loss.backward()
                opt2.step()
                parts = f"l1 {pix.item():.4f} kd {kd.item():.4f}"
            ema.update(s2)
        step += 1
        if step % 25 == 0:
            rate = (time.time() - t0) / 25
            t0 = time.time()
            log(args.work, f"step {step}/{total} [{stage}] {parts} ({rate:.2f} s/step)")
        if step % args.val_every == 0 or step in (total, n1):
            if step <= n1:
                s1.eval()
                psnr, bic = validate(lambda x, y: s1(x, y), val, scale)
                entry = {"step": step, "stage": "s1", "psnr_y": psnr, "bicubic": bic}
            else:
                s2.eval()

                def run(m):
                    return lambda x, y: m(x, val_noise)

                psnr, bic = validate(run(s2), val, scale)
                psnr_e, _ = validate(run(ema.shadow), val, scale)
                entry = {"step": step, "stage": stage, "psnr_y": psnr, "psnr_y_ema": psnr_e, "bicubic": bic}
            history.append(entry)
            log(args.work, "val " + json.dumps(entry))
            save()
    save(final=True)
    log(args.work, "done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
