"""Export the three inference graphs (CPEN, denoiser, backbone), verify them with onnxruntime, write a bundle."""

from __future__ import annotations

import io
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from diffir_export import __version__
from diffir_export.arch import DiffIRS2
from diffir_export.bundle import GRAPHS, write_bundle_yaml
from diffir_export.config import ModelConfig

OPSET = 17
TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """Export refused; nothing was written."""


class CpenGraph(nn.Module):
    def __init__(self, model: DiffIRS2) -> None:
        super().__init__()
        self.cpen = model.condition

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.cpen(image)


class DenoiserGraph(nn.Module):
    def __init__(self, model: DiffIRS2) -> None:
        super().__init__()
        self.denoise = model.denoise

    def forward(self, x: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.denoise(x, t, condition)


class BackboneGraph(nn.Module):
    def __init__(self, model: DiffIRS2) -> None:
        super().__init__()
        self.G = model.G

    def forward(self, image: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        return self.G(image, ipr)


class CpenFeaturesGraph(nn.Module):
    def __init__(self, model: DiffIRS2) -> None:
        super().__init__()
        self.cpen = model.condition

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.cpen.features(image)


class CpenHeadGraph(nn.Module):
    def __init__(self, model: DiffIRS2) -> None:
        super().__init__()
        self.cpen = model.condition

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.cpen.head(pooled)


def _wrappers(model: DiffIRS2) -> dict[str, nn.Module]:
    return {
        "cpen": CpenGraph(model),
        "denoiser": DenoiserGraph(model),
        "backbone": BackboneGraph(model),
        "cpen_features": CpenFeaturesGraph(model),
        "cpen_head": CpenHeadGraph(model),
    }


IMAGE_AXES = {0: "batch", 2: "height", 3: "width"}
DYNAMIC_AXES = {
    "cpen": {"image": IMAGE_AXES, "condition": {0: "batch"}},
    "denoiser": {"x": {0: "batch"}, "t": {0: "batch"}, "condition": {0: "batch"}, "x0": {0: "batch"}},
    "backbone": {"image": IMAGE_AXES, "ipr": {0: "batch"}, "output": IMAGE_AXES},
    "cpen_features": {"image": IMAGE_AXES, "features": IMAGE_AXES},
    "cpen_head": {"pooled": {0: "batch"}, "condition": {0: "batch"}},
}


def example_image(cfg: ModelConfig, height: int, width: int, seed: int) -> torch.Tensor:
    """A (1, C, H, W) input in [0, 1]; for inpainting masked RGB plus a binary mask channel."""
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand(1, 3, height, width, generator=g)
    if cfg.family != "inpaint":
        return rgb
    mask = (torch.rand(1, 1, height, width, generator=g) > 0.7).float()
    return torch.cat([rgb * (1 - mask), mask], dim=1)


def _graph_inputs(model: DiffIRS2, image: torch.Tensor, seed: int) -> dict[str, tuple[torch.Tensor, ...]]:
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed + 1)
    noise = torch.randn(image.shape[0], cfg.ipr_dim, generator=g)
    with torch.no_grad():
        c, steps = model.sample_ipr(image, noise)
    t = torch.full((image.shape[0],), cfg.timesteps - 1, dtype=torch.long)
    with torch.no_grad():
        pooled = model.condition.features(image).mean(dim=(2, 3))
    return {
        "cpen": (image,),
        "denoiser": (noise, t, c),
        "backbone": (image, steps[-1]),
        "cpen_features": (image,),
        "cpen_head": (pooled,),
    }


def export_graph(wrapper: nn.Module, name: str, args: tuple[torch.Tensor, ...]) -> bytes:
    spec = GRAPHS[name]
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            args,
            buf,
            input_names=list(spec["inputs"]),
            output_names=list(spec["outputs"]),
            dynamic_axes=DYNAMIC_AXES[name],
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load_from_string(buf.getvalue())
    proto.producer_name = "diffir_export"
    proto.producer_version = __version__
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


@dataclass
class Verification:
    graph: str
    size: tuple[int, int]
    max_abs_diff: float

    def __str__(self) -> str:
        return f"{self.graph:9s} {self.size[0]}x{self.size[1]}: max |onnxruntime - torch| = {self.max_abs_diff:.3e}"


def verify(model: DiffIRS2, graphs: dict[str, bytes], sizes: list[tuple[int, int]]) -> list[Verification]:
    """Run each graph with onnxruntime and PyTorch on the given LQ sizes; return the max |diff| of each."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sessions = {
        n: ort.InferenceSession(b, sess_options=opts, providers=["CPUExecutionProvider"]) for n, b in graphs.items()
    }
    wrappers = _wrappers(model)
    results = []
    for i, (h, w) in enumerate(sizes):
        image = example_image(model.cfg, h, w, seed=100 + i)
        for name, args in _graph_inputs(model, image, seed=200 + i).items():
            with torch.no_grad():
                want = wrappers[name](*args).numpy()
            feed = {k: a.numpy() for k, a in zip(GRAPHS[name]["inputs"], args, strict=True)}
            got = sessions[name].run(None, feed)[0]
            if got.shape != want.shape:
                raise ExportError(f"{name} at {h}x{w}: onnxruntime gives shape {got.shape}, torch {want.shape}")
            results.append(Verification(name, (h, w), float(np.abs(got - want).max())))
    return results


def verification_sizes(cfg: ModelConfig) -> list[tuple[int, int]]:
    m = cfg.size_multiple
    return [(2 * m, 2 * m), (2 * m, 3 * m)]


def export_bundle(
    model: DiffIRS2,
    cfg: ModelConfig,
    out: Path,
    provenance: dict,
    overwrite: bool = False,
    log=print,
) -> list[Verification]:
    """Export, verify, then write the graphs (out/*.onnx) and out/bundle.yaml.

    Nothing is written unless every graph matches PyTorch within TOLERANCE on two input sizes.
    """
    out = Path(out)
    if (out / "bundle.yaml").exists() and not overwrite:
        raise ExportError(f"{out}: a bundle already exists (use --overwrite to replace it)")
    model = model.eval()
    args = _graph_inputs(model, example_image(cfg, cfg.size_multiple, cfg.size_multiple, seed=0), seed=0)
    graphs = {n: export_graph(w, n, args[n]) for n, w in _wrappers(model).items()}
    results = verify(model, graphs, verification_sizes(cfg))
    for r in results:
        log(str(r))
    worst = max(results, key=lambda r: r.max_abs_diff)
    if not worst.max_abs_diff <= TOLERANCE:
        raise ExportError(
            f"verification failed: {worst.graph} at {worst.size[0]}x{worst.size[1]} differs by "
            f"{worst.max_abs_diff:.3e} > {TOLERANCE:g}; nothing written"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".diffir-export-", dir=out.parent))
    try:
        for name, data in graphs.items():
            (staging / GRAPHS[name]["file"]).write_bytes(data)
        defaults = {
            "checkpoint": "",
            "checkpoint_sha256": "",
            "checkpoint_layout": "",
            "exporter": f"diffir_export {__version__}",
            "torch": torch.__version__.split("+")[0],
        }
        write_bundle_yaml(staging / "bundle.yaml", cfg, {**defaults, **provenance, "opset": OPSET})
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted(staging.iterdir(), key=lambda p: p.name == "bundle.yaml"):
            f.replace(out / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return results
