"""The schedule against the spec's table (§4.1) and endpoint recovery for any T."""

import numpy as np
import pytest

from diffir_export.schedule import BUFFER_NAMES, endpoints_from_betas, schedule

SPEC = {
    "betas": [0.1, 0.29428562420046467, 0.5909522908671314, 0.99],
    "alphas_cumprod": [0.9, 0.6351429382195818, 0.259803763850639, 0.0025980376385063924],
    "posterior_variance": [0.0, 0.08065778493210977, 0.2912918304203333, 0.7347030599908495],
    "posterior_mean_coef1": [1.0000000000000002, 0.7651869342284294, 0.6362697629903223, 0.5059268116635789],
    "posterior_mean_coef2": [0.0, 0.23024580474748482, 0.31525564103393855, 0.07421243030210604],
    "sqrt_recipm1_alphas_cumprod": [0.3333333333333334, 0.7579239684096168, 1.6879155608040173, 19.59351663281591],
    "posterior_log_variance_clipped": [
        -46.051701859880914,
        -2.5175399517028665,
        -1.2334296606543307,
        -0.3082888614117415,
    ],
}


def test_default_schedule_matches_spec_table():
    s = schedule(4, 0.1, 0.99)
    assert tuple(s) == BUFFER_NAMES
    for name, want in SPEC.items():
        np.testing.assert_allclose(s[name], want, rtol=1e-12, atol=1e-15, err_msg=name)


def test_float32_coefficients_match_spec():
    s = schedule(4, 0.1, 0.99)
    assert s["posterior_mean_coef1"].astype(np.float32).tolist() == [
        1.0,
        0.7651869058609009,
        0.636269748210907,
        0.505926787853241,
    ]
    assert s["posterior_mean_coef2"].astype(np.float32).tolist() == [
        0.0,
        0.23024579882621765,
        0.31525564193725586,
        0.07421243190765381,
    ]


@pytest.mark.parametrize("t,start,end", [(4, 0.1, 0.99), (1, 0.2, 0.2), (6, 0.05, 0.9), (10, 0.0015, 0.0195)])
def test_endpoints_recovered_from_float32_betas(t, start, end):
    betas = schedule(t, start, end)["betas"].astype(np.float32)
    assert endpoints_from_betas(betas) == (t, start, end)
