"""Degradations of LR images: the JPEG round trip (evaluate --lr-jpeg) and the training degradations (mild noise
and JPEG on the LR crop only, seeded, validated once)."""

import numpy as np
import pytest

from diffir_export.data import Degradation, PatchSampler, jpeg_round_trip


def _photo(seed: int = 0, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    return np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))  # blocky, so JPEG changes it measurably


def test_jpeg_round_trip_loses_more_at_lower_quality():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:64]
    smooth = np.stack([xx * 3, yy * 4, (xx + yy) * 2], axis=-1)
    img = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
    errors = {}
    for q in (75, 90, 100):
        out = jpeg_round_trip(img, q)
        assert out.shape == img.shape and out.dtype == np.uint8
        errors[q] = np.abs(out.astype(float) - img).mean()
    assert errors[75] > errors[90] > errors[100] > 0


def test_default_degradation_is_the_identity():
    lr = _photo()
    assert np.array_equal(Degradation().apply(lr, np.random.default_rng(0)), lr)


def test_jpeg_always_equals_the_round_trip_at_the_drawn_quality():
    lr = _photo()
    deg = Degradation(jpeg_prob=1.0, jpeg_min=70, jpeg_max=95)
    out = deg.apply(lr, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    rng.random()  # the JPEG coin
    quality = int(rng.integers(70, 96))
    assert np.array_equal(out, jpeg_round_trip(lr, quality))
    assert not np.array_equal(out, lr)


def test_noise_has_the_configured_strength():
    lr = np.full((64, 64, 3), 128, dtype=np.uint8)
    deg = Degradation(noise_prob=1.0, noise_sigma=4.0)
    sigmas = [np.std(deg.apply(lr, np.random.default_rng(s)).astype(np.float64) - 128) for s in range(20)]
    assert min(sigmas) > 0.9 and max(sigmas) < 4.2
    assert max(sigmas) - min(sigmas) > 1.0  # σ is drawn per crop, not fixed


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"jpeg_prob": 1.5}, "jpeg_prob"),
        ({"noise_prob": -0.1}, "noise_prob"),
        ({"jpeg_min": 96, "jpeg_max": 95}, "JPEG qualities"),
        ({"noise_sigma": 0.5}, "noise_sigma"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Degradation(**kwargs)


def _smooth(seed: int, size: int = 128) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    rng = np.random.default_rng(seed)
    img = np.stack([xx, yy, (xx + yy) // 2], axis=-1) + rng.normal(0, 3, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def test_sampler_degrades_the_lr_and_keeps_the_hr_target_clean():
    images = [_smooth(1), _smooth(2)]
    clean = PatchSampler(images, 64, 4, seed=5)
    noisy = PatchSampler(images, 64, 4, seed=5, degradation=Degradation(jpeg_prob=1.0, noise_prob=1.0))
    lr_c, hr_c = clean.batch(1)
    lr_n, hr_n = noisy.batch(1)
    assert np.array_equal(hr_c, hr_n)
    assert lr_c.shape == lr_n.shape == (1, 3, 16, 16)
    assert 0.5 / 255 < np.abs(lr_c - lr_n).mean() < 6.0 / 255  # mild: a few grey levels
