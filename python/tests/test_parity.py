"""The package restores what the CLI restores: for every committed bundle, each dtype (uint8, uint16,
float32) and each backend, `Pipeline.restore` returns exactly the samples `diffir restore` writes; alpha, gray,
16-bit and the inpainting mask included; `restore_file` writes the CLI's bytes."""

from __future__ import annotations

import diffir
import numpy as np
import pytest
from PIL import Image

from conftest import BUNDLES, IMAGES, read_png, run_cli, write_png

ALL = ["sr_x1", "sr_x2", "sr_x4", "deblur", "inpaint"]


def mask_args(bundle: str) -> tuple[list[str], np.ndarray | None]:
    if bundle != "inpaint":
        return [], None
    path = BUNDLES / bundle / "mask.png"
    return ["--mask", str(path)], np.asarray(Image.open(path))


@pytest.mark.parametrize("bundle", ALL)
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_restore_equals_the_cli(tmp_path, cli, backend, bundle, dtype):
    eight = np.asarray(Image.open(BUNDLES / bundle / "input.png").convert("RGB"))
    extra, mask = mask_args(bundle)
    if dtype == "uint8":
        image, src, out = eight, BUNDLES / bundle / "input.png", tmp_path / "out.png"
    elif dtype == "uint16":
        image, src, out = eight.astype(np.uint16) * 257, tmp_path / "in16.png", tmp_path / "out.png"
        write_png(src, image)
    else:
        image, src, out = eight.astype(np.float32) / 255, tmp_path / "in.npy", tmp_path / "out.npy"
        np.save(src, image)
    run_cli(cli, "restore", src, "-o", out, "-n", BUNDLES / bundle, "--backend", backend, "-q", *extra)
    want = np.load(out) if dtype == "float32" else read_png(out)
    got = diffir.Pipeline(BUNDLES / bundle, backend=backend).restore(image, mask)
    assert got.dtype == np.dtype(dtype)
    assert got.shape == want.shape
    assert np.array_equal(got, want), f"max difference {np.abs(got.astype(float) - want).max()}"


@pytest.mark.parametrize(
    ("image", "bundle"),
    [("rgba.png", "sr_x4"), ("gray.png", "sr_x2"), ("rgb16.png", "sr_x2"), ("palette.png", "sr_x1")],
)
def test_alpha_gray_and_16_bit_equal_the_cli(tmp_path, cli, backend, image, bundle):
    src = IMAGES / image
    run_cli(cli, "restore", src, "-o", tmp_path / "out.png", "-n", BUNDLES / bundle, "--backend", backend, "-q")
    want = read_png(tmp_path / "out.png")
    array = np.asarray(Image.open(src).convert("RGB")) if image == "palette.png" else read_png(src)
    got = diffir.Pipeline(BUNDLES / bundle, backend=backend).restore(array)
    assert (got.dtype, got.shape) == (want.dtype, want.shape)
    assert np.array_equal(got, want)


def test_layouts_and_channels(backend):
    """A non-contiguous view restores like its contiguous copy; H×W×1 stays H×W×1; PIL images work."""
    base = np.asarray(Image.open(BUNDLES / "sr_x2" / "input.png").convert("RGB"))
    pipeline = diffir.Pipeline(BUNDLES / "sr_x2", backend=backend)
    flipped = base[::-1, :, :]
    assert not flipped.flags["C_CONTIGUOUS"]
    assert np.array_equal(pipeline.restore(flipped), pipeline.restore(np.ascontiguousarray(flipped)))
    gray = base[:, :, :1]
    out = pipeline.restore(gray)
    assert out.shape == (base.shape[0] * 2, base.shape[1] * 2, 1)
    assert np.array_equal(out[:, :, 0], pipeline.restore(np.ascontiguousarray(gray[:, :, 0])))
    assert np.array_equal(pipeline.restore(Image.open(BUNDLES / "sr_x2" / "input.png")), pipeline.restore(base))


@pytest.mark.parametrize("output", ["out.png", "out.jpg", "out.webp", "out.tiff"])
def test_restore_file_writes_the_cli_bytes(tmp_path, cli, backend, output):
    src = IMAGES / "rgba.png" if output in ("out.png", "out.webp", "out.tiff") else IMAGES / "icc.jpg"
    run_cli(cli, "restore", src, "-o", tmp_path / f"cli_{output}", "-n", BUNDLES / "sr_x2", "--backend", backend, "-q")
    pipeline = diffir.Pipeline(BUNDLES / "sr_x2", backend=backend)
    pipeline.restore_file(src, tmp_path / output)
    assert (tmp_path / output).read_bytes() == (tmp_path / f"cli_{output}").read_bytes()


def test_restore_file_with_a_mask_seed_and_outscale(tmp_path, cli, backend):
    b = BUNDLES / "inpaint"
    args = ["-n", b, "--backend", backend, "-q", "--mask", b / "mask.png", "--seed", "7", "--outscale", "1.5"]
    run_cli(cli, "restore", b / "input.png", "-o", tmp_path / "cli.png", *args)
    pipeline = diffir.Pipeline(b, backend=backend)
    pipeline.restore_file(b / "input.png", tmp_path / "py.png", b / "mask.png", seed=7, outscale=1.5)
    assert (tmp_path / "py.png").read_bytes() == (tmp_path / "cli.png").read_bytes()
    # The module-level function opens a pipeline with the same keywords.
    diffir.restore_file(b / "input.png", tmp_path / "fn.png", b / "mask.png", model=b, backend=backend, seed=7,
                        outscale=1.5)  # fmt: skip
    assert (tmp_path / "fn.png").read_bytes() == (tmp_path / "cli.png").read_bytes()


def test_seeds(backend):
    """The pipeline's seed is the default; a restore's seed overrides it, as --seed does."""
    image = np.asarray(Image.open(BUNDLES / "sr_x1" / "input.png").convert("RGB"))
    zero = diffir.Pipeline(BUNDLES / "sr_x1", backend=backend)
    five = diffir.Pipeline(BUNDLES / "sr_x1", backend=backend, seed=5)
    assert np.array_equal(zero.restore(image, seed=5), five.restore(image))
    assert not np.array_equal(zero.restore(image), five.restore(image))
