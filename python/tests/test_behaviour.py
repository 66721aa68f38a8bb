"""What people rely on: threads (one pipeline shared, the GIL released while computing), cancellation from
`progress` and by Ctrl-C between tiles, the exception classes with the CLI's messages, silence, `info` and
`models()`, and the onnxruntime pin."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import diffir
import numpy as np
import pytest
from PIL import Image

from conftest import BUNDLES, ROOT, run_cli

SR1 = BUNDLES / "sr_x1"


def noise_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiled():
    """sr_x1 at 32-pixel tiles: a 256×256 image is 64 tiles."""
    return diffir.Pipeline(SR1, backend="tract", tile=32, workers=1)


def test_several_threads_share_one_pipeline(backend):
    pipeline = diffir.Pipeline(SR1, backend=backend, tile=32)
    images = [noise_image(70, 90, seed) for seed in range(6)]
    alone = [pipeline.restore(im, seed=i) for i, im in enumerate(images)]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda i: pipeline.restore(images[i], seed=i), range(6)))
    for a, b in zip(alone, together, strict=False):
        assert np.array_equal(a, b)


def test_the_gil_is_released_while_computing(tiled):
    count = [0]
    running = threading.Event()
    stop = threading.Event()

    def counter():
        running.set()
        while not stop.is_set():
            count[0] += 1

    t = threading.Thread(target=counter)
    t.start()
    running.wait()
    try:
        start = count[0]
        began = time.perf_counter()
        tiled.restore(noise_image(256, 256))
        elapsed = time.perf_counter() - began
        during = count[0] - start
    finally:
        stop.set()
        t.join()
    # Had the restore held the GIL, the counter could not have moved while it ran.
    assert elapsed > 0.05
    assert during > 10_000, f"the counter advanced {during} times in {elapsed:.2f} s"


def test_progress_reports_every_tile(tiled):
    seen = []
    tiled.restore(noise_image(256, 256), progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (64, 64)
    assert [d for d, _ in seen] == list(range(1, 65))


def test_raising_from_progress_cancels(tiled):
    seen = []

    class Stop(Exception):
        pass

    def progress(done, total):
        seen.append(done)
        if done == 3:
            raise Stop("enough")

    with pytest.raises(Stop, match="enough"):
        tiled.restore(noise_image(256, 256), progress=progress)
    assert max(seen) < 64, f"{max(seen)} of 64 tiles ran after the cancel"


def test_ctrl_c_stops_between_tiles(tiled):
    assert threading.current_thread() is threading.main_thread()
    seen = []
    main = threading.main_thread().ident

    def progress(done, total):
        seen.append(done)
        if done == 2:
            # Ctrl-C, as a terminal delivers it to the process (to its main thread); the pause lets the
            # waiting main thread see it before the remaining tiles could finish (they take milliseconds).
            signal.pthread_kill(main, signal.SIGINT)
            time.sleep(0.5)

    # Python's own Ctrl-C handler, even where the test runs with SIGINT ignored (a background job of a
    # shell without job control inherits SIG_IGN, and Python then installs no handler).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            tiled.restore(noise_image(256, 256), progress=progress)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert max(seen) < 64, f"{max(seen)} of 64 tiles ran after Ctrl-C"


def test_exception_classes():
    assert issubclass(diffir.InputError, diffir.DiffirError)
    assert issubclass(diffir.InputError, ValueError)
    assert issubclass(diffir.OutOfMemoryError, MemoryError)
    assert issubclass(diffir.FileError, OSError)
    for cls in (diffir.ModelError, diffir.BackendError, diffir.OutOfMemoryError, diffir.CancelledError):
        assert issubclass(cls, diffir.DiffirError)


def cli_error(cli, *args) -> str:
    """The CLI's message for the error: its `error: ` line, without the input file a batch line starts with."""
    r = run_cli(cli, *args, ok=False)
    assert r.returncode != 0
    line = next((x for x in r.stderr.splitlines() if x.startswith("error: ")), None)
    assert line is not None, r.stderr
    return line.removeprefix("error: ").removeprefix(f"{args[1]}: ")


def test_errors_carry_the_cli_messages(tmp_path, cli):
    src = SR1 / "input.png"
    # A model folder that is not there.
    missing = tmp_path / "no_such_model"
    with pytest.raises(diffir.DiffirError) as e:
        diffir.Pipeline(missing)
    assert str(e.value) == cli_error(cli, "restore", src, "-o", tmp_path / "o.png", "-n", missing)
    # A model that is not a bundle.
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "bundle.yaml").write_text("task: sr\n")
    with pytest.raises(diffir.ModelError) as e:
        diffir.Pipeline(tmp_path / "broken")
    assert str(e.value) == cli_error(cli, "restore", src, "-o", tmp_path / "o.png", "-n", tmp_path / "broken")
    # A mask for a model that takes none.
    image = np.asarray(Image.open(src).convert("RGB"))
    with pytest.raises(diffir.InputError) as e:
        diffir.Pipeline(SR1, backend="tract").restore(image, np.ones(image.shape[:2], np.uint8))
    want = cli_error(
        cli, "restore", src, "-o", tmp_path / "o.png", "-n", SR1, "--mask", BUNDLES / "inpaint" / "mask.png"
    )
    assert str(e.value) == want
    # An output that exists.
    (tmp_path / "exists.png").write_bytes(b"")
    with pytest.raises(diffir.FileError) as e:
        diffir.Pipeline(SR1, backend="tract").restore_file(src, tmp_path / "exists.png")
    assert str(e.value) == cli_error(cli, "restore", src, "-o", tmp_path / "exists.png", "-n", SR1)
    # An unknown backend, in the words of the CLI's value check.
    with pytest.raises(diffir.InputError, match="unknown backend 'gpu'"):
        diffir.Pipeline(SR1, backend="gpu")


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (np.zeros((8, 8, 3), np.float64), "float64"),
        (np.zeros((8, 8, 5), np.uint8), r"\(8, 8, 5\)"),
        (np.zeros((8,), np.uint8), r"\(8,\)"),
        (np.full((8, 8, 3), 2.0, np.float32), r"\[0, 1\]"),
        (np.zeros((0, 8, 3), np.uint8), "empty"),
        ("not an image", "dtype is <U12"),
    ],
)
def test_bad_arrays_are_input_errors(array, words):
    pipeline = diffir.Pipeline(SR1, backend="tract")
    with pytest.raises(diffir.InputError, match=words) as e:
        pipeline.restore(array)
    assert isinstance(e.value, ValueError)


def test_bad_keywords_are_input_errors():
    with pytest.raises(diffir.InputError, match="precision"):
        diffir.Pipeline(SR1, precision="fp64")
    with pytest.raises(diffir.InputError, match="tile"):
        diffir.Pipeline(SR1, tile="big")
    with pytest.raises(diffir.InputError, match="max_memory"):
        diffir.Pipeline(SR1, max_memory="lots")
    with pytest.raises(diffir.InputError, match="outscale"):
        diffir.Pipeline(SR1, backend="tract").restore_file(SR1 / "input.png", "x.png", outscale=17)


def test_nothing_is_printed_on_import_or_success(tmp_path):
    script = (
        "import numpy as np, diffir\n"
        "p = diffir.Pipeline()\n"
        "out = p.restore(np.zeros((20, 24, 3), np.uint8))\n"
        "assert out.shape == (80, 96, 3)\n"
        f"p.restore_file({str(SR1 / 'input.png')!r}, {str(tmp_path / 'o.png')!r})\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert (r.stdout, r.stderr) == ("", "")


def test_info_and_models(tmp_path, monkeypatch):
    p = diffir.Pipeline(SR1, backend="tract", tile=64, threads=1)
    info = p.info
    assert (info["task"], info["scale"], info["backend"]) == ("sr", 1, "tract")
    assert info["plan"]["tile"] == 64 and info["plan"]["threads"] == 1
    assert "tract" in repr(p)
    builtin = diffir.Pipeline(backend="tract").info
    assert (builtin["model"], builtin["scale"]) == ("diffir-x4-small", 4)
    models = tmp_path / "models"
    (models / "mine").mkdir(parents=True)
    for f in SR1.iterdir():
        (models / "mine" / f.name).write_bytes(f.read_bytes())
    monkeypatch.setenv("DIFFIR_MODELS_DIR", str(models))
    listed = diffir.models()
    assert [(m["name"], m["task"], m["scale"]) for m in listed] == [("mine", "sr", 1)]
    assert diffir.Pipeline("mine", backend="tract").info["path"] == str(models / "mine")


def test_onnxruntime_comes_from_its_package():
    """The package loads the onnxruntime package's own library; the pin is the project's one pin."""
    import importlib.util

    capi = Path(importlib.util.find_spec("onnxruntime").submodule_search_locations[0]) / "capi"
    assert diffir._library == capi / f"libonnxruntime.so.{diffir.ONNXRUNTIME_VERSION}"
    if not os.environ.get("ORT_DYLIB_PATH"):
        info = diffir.Pipeline(SR1, backend="ort-cpu").info
        assert info["onnxruntime"] == str(diffir._library)
    pins = {
        p: re.search(r'"onnxruntime==([0-9.]+)"', (ROOT / p).read_text()).group(1)
        for p in ("export/pyproject.toml", "python/pyproject.toml")
    }
    assert set(pins.values()) == {diffir.ONNXRUNTIME_VERSION}, pins
