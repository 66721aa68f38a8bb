"""Model hyper-parameters: one typed description of every DiffIR S2 variant, read from YAML and validated once."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

FAMILIES = ("sr", "deblur", "inpaint")
LAYERNORM_TYPES = ("BiasFree", "WithBias")
# How many pixels of the LQ image one pixel of G's input covers (SR x2/x1 unshuffle their input first).
SR_INPUT_UNSHUFFLE = {4: 1, 2: 2, 1: 4}


class ConfigError(ValueError):
    """A model description that cannot be built; the message names the field."""


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of one DiffIR S2 network (names follow the official `DiffIRS2` arguments)."""

    family: str
    scale: int = 1
    dim: int = 48
    num_blocks: tuple[int, int, int, int] = (4, 6, 6, 8)
    num_refinement_blocks: int = 4
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    ffn_expansion_factor: float = 2.66
    bias: bool = False
    layernorm_type: str = "WithBias"
    n_encoder_res: int = 6
    n_denoise_res: int = 1
    ipr_dim: int = 256
    timesteps: int = 4
    linear_start: float = 0.1
    linear_end: float = 0.99
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        self.validate()

    # ----- derived quantities -------------------------------------------------------------------------
    @property
    def n_feats(self) -> int:
        """CPEN's base width; the IPR is 4·n_feats wide."""
        return self.ipr_dim // 4

    @property
    def input_channels(self) -> int:
        """Channels of the image the graphs take (inpainting: masked RGB + mask)."""
        return 4 if self.family == "inpaint" else 3

    @property
    def g_unshuffle(self) -> int:
        """Pixel-unshuffle factor applied to the image before G (SR x2/x1 only)."""
        return SR_INPUT_UNSHUFFLE[self.scale] if self.family == "sr" else 1

    @property
    def cpen_unshuffle(self) -> int:
        """Pixel-unshuffle factor applied to the image before CPEN."""
        return self.g_unshuffle if self.family == "sr" else 4

    @property
    def size_multiple(self) -> int:
        """LQ height and width must be multiples of this: G's three 2x downsamplings after its unshuffle, and
        CPEN's unshuffle."""
        return math.lcm(8 * self.g_unshuffle, self.cpen_unshuffle)

    @property
    def cpen_halo(self) -> int:
        """CPEN's receptive-field radius in LQ pixels: one per 3x3 conv, times the unshuffle factor."""
        convs = 1 + 2 * self.n_encoder_res + 3
        return convs * self.cpen_unshuffle

    @property
    def padding(self) -> str:
        """Padding rule of the official scripts: NumPy 'symmetric' for inpainting, PyTorch 'reflect' else."""
        return "symmetric" if self.family == "inpaint" else "reflect"

    @property
    def has_refinement(self) -> bool:
        return self.family != "inpaint"

    def hidden(self, channels: int) -> int:
        """FFN hidden width at a given channel count, as the official code computes it."""
        return int(channels * self.ffn_expansion_factor)

    # ----- validation ---------------------------------------------------------------------------------
    def validate(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"config field '{name}': {why}")

        if self.family not in FAMILIES:
            raise bad("family", f"{self.family!r} is not one of {', '.join(FAMILIES)}")
        if self.family == "sr" and self.scale not in SR_INPUT_UNSHUFFLE:
            raise bad("scale", f"{self.scale} is not 1, 2 or 4 (SR)")
        if self.family != "sr" and self.scale != 1:
            raise bad("scale", f"{self.family} models have scale 1, not {self.scale}")
        if self.dim <= 0 or self.dim % 2:
            raise bad("dim", f"{self.dim} must be a positive even number")
        if len(self.num_blocks) != 4 or any(n < 1 for n in self.num_blocks):
            raise bad("num_blocks", f"{list(self.num_blocks)} must be 4 counts >= 1")
        if len(self.heads) != 4 or any(h < 1 for h in self.heads):
            raise bad("heads", f"{list(self.heads)} must be 4 counts >= 1")
        widths = (self.dim, 2 * self.dim, 4 * self.dim, 8 * self.dim)
        for level, (c, h) in enumerate(zip(widths, self.heads, strict=True)):
            if c % h:
                raise bad("heads", f"level {level} has {c} channels, not divisible by {h} heads")
        if self.num_refinement_blocks < 0:
            raise bad("num_refinement_blocks", "must be >= 0")
        if self.ffn_expansion_factor <= 0 or self.hidden(self.dim) < 1:
            raise bad("ffn_expansion_factor", f"{self.ffn_expansion_factor} gives an empty FFN")
        if self.layernorm_type not in LAYERNORM_TYPES:
            raise bad("layernorm_type", f"{self.layernorm_type!r} is not one of {', '.join(LAYERNORM_TYPES)}")
        if self.n_encoder_res < 0:
            raise bad("n_encoder_res", "must be >= 0")
        if self.n_denoise_res < 0:
            raise bad("n_denoise_res", "must be >= 0")
        if self.ipr_dim <= 0 or self.ipr_dim % 4:
            raise bad("ipr_dim", f"{self.ipr_dim} must be a positive multiple of 4")
        if self.timesteps < 1:
            raise bad("timesteps", "must be >= 1")
        if not (0 < self.linear_start < 1 and 0 < self.linear_end < 1):
            raise bad("linear_start", "schedule endpoints must lie in (0, 1)")

    # ----- YAML ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["num_blocks"] = list(self.num_blocks)
        d["heads"] = list(self.heads)
        return d

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> ModelConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of hyper-parameters")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {', '.join(unknown)}")
        if "family" not in data:
            raise ConfigError(f"{source}: missing field 'family'")
        kwargs = dict(data)
        for key in ("num_blocks", "heads"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        try:
            return cls(**kwargs)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        except TypeError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{path}: cannot read YAML: {e}") from None
        return cls.from_dict(data, source=str(path))

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)
