"""Official checkpoint layouts, hyper-parameter detection from tensor shapes, and strict loading."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from diffir_export.arch import DiffIRS2
from diffir_export.config import SR_INPUT_UNSHUFFLE, ConfigError, ModelConfig
from diffir_export.schedule import BUFFER_NAMES, endpoints_from_betas, schedule

LEVELS = ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
SCHEDULE_RTOL = 1e-5
SCHEDULE_ATOL = 1e-6


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded strictly; the message names the file and the offending keys."""


@dataclass
class LoadedCheckpoint:
    path: Path
    layout: str
    state_dict: dict[str, torch.Tensor]
    sha256: str


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_state_dict(obj: object) -> bool:
    return (
        isinstance(obj, dict)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _strip_module(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in sd.items()}


def read_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Read a checkpoint file and pick the S2 generator's state dict by the official layout rules.

    basicsr: `params_ema`, else `params` (`module.` prefixes dropped). Lightning: `state_dict` entries under
    `generator.` (teacher, discriminator, losses ignored). Otherwise a bare state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types on foreign bytes (IndexError, UnpicklingError, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({first})") from None
    if isinstance(obj, dict) and "params_ema" in obj:
        layout, sd = "basicsr params_ema", obj["params_ema"]
    elif isinstance(obj, dict) and "params" in obj:
        layout, sd = "basicsr params", obj["params"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        layout = "lightning generator."
        sd = {k[len("generator.") :]: v for k, v in obj["state_dict"].items() if k.startswith("generator.")}
        if not sd:
            raise CheckpointError(f"{path}: Lightning checkpoint without 'generator.' entries")
    elif _is_state_dict(obj):
        layout, sd = "state dict", obj
    else:
        raise CheckpointError(
            f"{path}: not a DiffIR checkpoint (expected 'params_ema', 'params', 'state_dict' or a state dict)"
        )
    if not _is_state_dict(sd):
        raise CheckpointError(f"{path}: the '{layout}' entry is not a mapping of names to tensors")
    return LoadedCheckpoint(path=path, layout=layout, state_dict=_strip_module(sd), sha256=sha256_of(path))


# ----- hyper-parameter detection ---------------------------------------------------------------------------


def _count(sd: dict[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    idx = {int(m.group(1)) for k in sd if (m := rx.fullmatch(k))}
    return len(idx)


def _shape(sd: dict[str, torch.Tensor], key: str, what: str) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"cannot detect {what}: missing key {key}")
    return tuple(sd[key].shape)


def _shortest_in(lo: float, hi: float) -> float:
    """The decimal with fewest digits in [lo, hi)."""
    for digits in range(0, 8):
        step = 10.0**-digits
        cand = np.ceil(lo / step - 1e-9) * step
        cand = round(float(cand), digits)
        if lo <= cand < hi:
            return cand
    return lo


def detect_ffn_factor(widths_hidden: list[tuple[int, int]]) -> float:
    """Recover the FFN expansion factor f from (channels, int(channels·f)) pairs."""
    lo, hi = 0.0, float("inf")
    for c, h in widths_hidden:
        lo, hi = max(lo, h / c), min(hi, (h + 1) / c)
    f = _shortest_in(lo, hi)
    if any(int(c * f) != h for c, h in widths_hidden):
        raise CheckpointError(f"cannot detect ffn_expansion_factor from hidden widths {widths_hidden}")
    return f


def detect_config(sd: dict[str, torch.Tensor]) -> ModelConfig:
    """Every hyper-parameter from the state dict alone (shapes, key counts and the stored betas)."""
    embed = _shape(sd, "G.patch_embed.proj.weight", "the family")
    dim, in_ch = embed[0], embed[1]
    if "G.tail.0.0.weight" in sd:
        family = "sr"
        by_channels = {3 * u * u: s for s, u in SR_INPUT_UNSHUFFLE.items()}
        if in_ch not in by_channels:
            raise CheckpointError(f"cannot detect the SR scale: patch_embed takes {in_ch} channels")
        scale = by_channels[in_ch]
    elif "G.output.weight" in sd:
        family = {3: "deblur", 4: "inpaint"}.get(in_ch)
        if family is None:
            raise CheckpointError(f"cannot detect the family: patch_embed takes {in_ch} channels")
        scale = 1
    else:
        raise CheckpointError("cannot detect the family: neither G.tail.0.0.weight nor G.output.weight")

    num_blocks = tuple(_count(sd, rf"G\.{lvl}\.(\d+)\.norm1\.body\.weight") for lvl in LEVELS)
    heads = tuple(_shape(sd, f"G.{lvl}.0.attn.temperature", "heads")[0] for lvl in LEVELS)
    refinement = _count(sd, r"G\.refinement\.(\d+)\.norm1\.body\.weight")
    pairs = []
    for lvl, width in zip(LEVELS, (dim, 2 * dim, 4 * dim, 8 * dim), strict=True):
        pairs.append((width, _shape(sd, f"G.{lvl}.0.ffn.project_out.weight", "the FFN width")[1]))
    pairs.append((2 * dim, _shape(sd, "G.decoder_level1.0.ffn.project_out.weight", "the FFN width")[1]))
    ffn = detect_ffn_factor(pairs)
    layernorm = "WithBias" if "G.encoder_level1.0.norm1.body.bias" in sd else "BiasFree"
    bias = "G.patch_embed.proj.bias" in sd
    n_encoder_res = _count(sd, r"condition\.E\.(\d+)\.body\.0\.weight")
    n_denoise_res = _count(sd, r"denoise\.resmlp\.(\d+)\.resmlp\.0\.weight")
    ipr_dim = _shape(sd, "denoise.resmlp.0.weight", "the IPR width")[0]

    if "diffusion.betas" in sd:
        timesteps, start, end = endpoints_from_betas(sd["diffusion.betas"].numpy())
    else:
        defaults = {f.name: f.default for f in fields(ModelConfig)}
        timesteps, start, end = defaults["timesteps"], defaults["linear_start"], defaults["linear_end"]
    try:
        return ModelConfig(
            family=family,
            scale=scale,
            dim=dim,
            num_blocks=num_blocks,
            num_refinement_blocks=refinement,
            heads=heads,
            ffn_expansion_factor=ffn,
            bias=bias,
            layernorm_type=layernorm,
            n_encoder_res=n_encoder_res,
            n_denoise_res=n_denoise_res,
            ipr_dim=ipr_dim,
            timesteps=timesteps,
            linear_start=start,
            linear_end=end,
        )
    except ConfigError as e:
        raise CheckpointError(f"detected hyper-parameters are inconsistent: {e}") from None


def reconcile(detected: ModelConfig, given: ModelConfig | None, source: str) -> ModelConfig:
    """The given config when it agrees with the checkpoint; otherwise an error naming each field."""
    if given is None:
        return detected
    conflicts = []
    for f in fields(ModelConfig):
        if f.name == "name":
            continue
        a, b = getattr(given, f.name), getattr(detected, f.name)
        same = abs(a - b) < 1e-9 if isinstance(a, float) else a == b
        if not same:
            conflicts.append(f"{f.name} (config {a!r}, checkpoint {b!r})")
    if conflicts:
        raise ConfigError(f"{source} conflicts with the checkpoint: {'; '.join(conflicts)}")
    return given


# ----- strict loading ------------------------------------------------------------------------------------


def _summarise(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_model(ckpt: LoadedCheckpoint, cfg: ModelConfig) -> DiffIRS2:
    """Build the network for `cfg` and load the checkpoint strictly.

    Every official key must be present with its shape, nothing else may be; the `diffusion.model.*` and
    `diffusion.condition.*` aliases must equal their twins; stored schedule buffers must equal the schedule
    computed from the hyper-parameters. All problems are reported together in one error.
    """
    model = DiffIRS2(cfg).eval()
    expected = {k: tuple(v.shape) for k, v in model.official_state_dict().items()}
    sd = ckpt.state_dict
    optional = {f"diffusion.{n}" for n in BUFFER_NAMES} | {
        k for k in expected if k.startswith(("diffusion.model.", "diffusion.condition."))
    }
    missing = [k for k in expected if k not in sd and k not in optional]
    unexpected = [k for k in sd if k not in expected]
    wrong = [
        f"{k} {tuple(sd[k].shape)}≠{expected[k]}" for k in expected if k in sd and tuple(sd[k].shape) != expected[k]
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_summarise(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_summarise(unexpected)}")
    if wrong:
        problems.append(f"wrong shapes: {_summarise(wrong)}")
    if not problems:
        mismatched = []
        for prefix, twin in (("diffusion.model.", "denoise."), ("diffusion.condition.", "condition.")):
            for k in sd:
                if k.startswith(prefix) and not torch.equal(sd[k], sd[twin + k[len(prefix) :]]):
                    mismatched.append(k)
        if mismatched:
            problems.append(f"aliases differ from their twins: {_summarise(mismatched)}")
        sched = schedule(cfg.timesteps, cfg.linear_start, cfg.linear_end)
        bad_sched = [
            f"diffusion.{n}"
            for n in BUFFER_NAMES
            if f"diffusion.{n}" in sd
            and not np.allclose(sd[f"diffusion.{n}"].double().numpy(), sched[n], rtol=SCHEDULE_RTOL, atol=SCHEDULE_ATOL)
        ]
        if bad_sched:
            problems.append(
                f"schedule buffers do not match T={cfg.timesteps}, start={cfg.linear_start}, "
                f"end={cfg.linear_end}: {_summarise(bad_sched)}"
            )
    if problems:
        raise CheckpointError(f"{ckpt.path} ({ckpt.layout}): " + "; ".join(problems))
    own = {k: v for k, v in sd.items() if not k.startswith("diffusion.")}
    model.load_state_dict(own, strict=True)
    return model


def load(path: str | Path, config: ModelConfig | None = None, config_source: str = "--config"):
    """Read, detect, reconcile and load: returns (model, config, checkpoint)."""
    ckpt = read_checkpoint(path)
    try:
        detected = detect_config(ckpt.state_dict)
    except CheckpointError as e:
        if config is None:
            raise CheckpointError(f"{ckpt.path}: {e}") from None
        # The given config decides; strict loading then lists every key that does not fit it.
        detected = config
    cfg = reconcile(detected, config, config_source)
    return load_model(ckpt, cfg), cfg, ckpt
