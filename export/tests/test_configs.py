"""configs/: every released model's YAML builds the official keys and shapes; detection recovers them."""

import numpy as np
import pytest
import torch

from conftest import CONFIGS, SHARED, needs_shared
from diffir_export.arch import DiffIRS2
from diffir_export.checkpoint import detect_config
from diffir_export.config import ConfigError, ModelConfig
from diffir_export.schedule import schedule

NAMES = [
    "srgan_x4",
    "srgan_x2",
    "realsr_x4",
    "realsr_x2",
    "realsr_x1",
    "deblur_gopro",
    "inpaint_celeba",
    "inpaint_places",
    "inpaint_places_big",
]
LISTING = {"deblur_gopro": "deblur"}


def listing(name):
    path = SHARED / "fixtures" / "official" / "listings" / f"keys_{LISTING.get(name, name)}.txt"
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            continue
        key, shape, _ = line.split("\t")
        rows.append((key, tuple(int(s) for s in shape.strip("()").split(",") if s.strip())))
    return rows


def test_every_released_model_has_a_config():
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == sorted(NAMES)


@needs_shared
@pytest.mark.parametrize("name", NAMES)
def test_config_builds_official_keys_and_shapes(name):
    cfg = ModelConfig.load(CONFIGS / f"{name}.yaml")
    assert cfg.name == name
    sd = DiffIRS2(cfg).official_state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == listing(name)


@needs_shared
@pytest.mark.parametrize("name", NAMES)
def test_detection_recovers_config_from_listing_shapes(name):
    cfg = ModelConfig.load(CONFIGS / f"{name}.yaml")
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(shape, generator=g) for k, shape in listing(name)}
    sd["diffusion.betas"] = torch.tensor(schedule(4, 0.1, 0.99)["betas"].astype(np.float32))
    assert detect_config(sd) == cfg


def test_config_errors_name_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("family: sr\nscale: 3\n")
    with pytest.raises(ConfigError, match="scale"):
        ModelConfig.load(bad)
    bad.write_text("family: sr\ncolour: red\n")
    with pytest.raises(ConfigError, match="colour"):
        ModelConfig.load(bad)
    bad.write_text("family: sr\ndim: 64\nheads: [1, 3, 4, 8]\n")
    with pytest.raises(ConfigError, match="heads"):
        ModelConfig.load(bad)


def test_size_multiples_and_halos_follow_the_spec():
    cfgs = {n: ModelConfig.load(CONFIGS / f"{n}.yaml") for n in NAMES}
    assert [cfgs[n].size_multiple for n in ("realsr_x4", "realsr_x2", "realsr_x1")] == [8, 16, 32]
    assert cfgs["realsr_x4"].cpen_halo == 22 and cfgs["realsr_x2"].cpen_halo == 44
    assert cfgs["realsr_x1"].cpen_halo == 88
    assert cfgs["deblur_gopro"].cpen_halo == 56 and cfgs["inpaint_places_big"].cpen_halo == 80
    assert cfgs["inpaint_places"].padding == "symmetric" and cfgs["deblur_gopro"].padding == "reflect"
