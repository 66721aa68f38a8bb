"""The evaluation's JPEG degradation of LR inputs (diffir_export.evaluate --lr-jpeg)."""

import numpy as np

from diffir_export.data import jpeg_round_trip


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
