"""Export the inference graphs (CPEN whole and split at its pool, denoiser, backbone, optionally an fp16 backbone),
verify them with onnxruntime, write a bundle."""

from __future__ import annotations

import copy
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
import yaml
from torch import nn

from diffir_export import __version__, graph_opt
from diffir_export.arch import DiffIRS2
from diffir_export.bundle import GRAPHS, write_bundle_yaml
from diffir_export.config import ModelConfig

OPSET = 17
TOLERANCE = 1e-4
# The fp16 backbone against PyTorch float32, relative to the output's largest magnitude: float16 activations
# (11-bit mantissa) through the whole U-net; LayerNorm, the H·W reductions and the softmax stay float32.
FP16_TOLERANCE = 5e-3


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


class BackboneFp16Graph(nn.Module):
    """The backbone in float16 with float32 inputs and output (the runtime feeds and reads float32 only).

    DIRformer keeps its LayerNorms, the attention's H·W reductions and the softmax in float32 when it runs in
    a reduced precision, so the graph has float32 islands where float16 would overflow or lose the sums."""

    def __init__(self, model: DiffIRS2) -> None:
        super().__init__()
        self.G = copy.deepcopy(model.G).half()

    def forward(self, image: torch.Tensor, ipr: torch.Tensor) -> torch.Tensor:
        return self.G(image.half(), ipr.half()).float()


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


def _wrappers(model: DiffIRS2, fp16: bool = False) -> dict[str, nn.Module]:
    out = {
        "cpen": CpenGraph(model),
        "denoiser": DenoiserGraph(model),
        "backbone": BackboneGraph(model),
        "cpen_features": CpenFeaturesGraph(model),
        "cpen_head": CpenHeadGraph(model),
    }
    if fp16:
        out["backbone_fp16"] = BackboneFp16Graph(model)
    return out


IMAGE_AXES = {0: "batch", 2: "height", 3: "width"}
# The backbone's output is scale x its input: its spatial axes get names of their own, never the input's
# (a shared name would declare them equal, and planners that trust declared shapes would size buffers wrongly).
BACKBONE_OUTPUT_AXES = {0: "batch", 2: "out_height", 3: "out_width"}
DYNAMIC_AXES = {
    "cpen": {"image": IMAGE_AXES, "condition": {0: "batch"}},
    "denoiser": {"x": {0: "batch"}, "t": {0: "batch"}, "condition": {0: "batch"}, "x0": {0: "batch"}},
    "backbone": {"image": IMAGE_AXES, "ipr": {0: "batch"}, "output": BACKBONE_OUTPUT_AXES},
    "backbone_fp16": {"image": IMAGE_AXES, "ipr": {0: "batch"}, "output": BACKBONE_OUTPUT_AXES},
    "cpen_features": {"image": IMAGE_AXES, "features": IMAGE_AXES},
    "cpen_head": {"pooled": {0: "batch"}, "condition": {0: "batch"}},
}


def declare_backbone_output(proto: onnx.ModelProto) -> bool:
    """Give the backbone output's spatial axes their own names where they reuse the input's (bundles exported
    before the fix declared `output` as [batch, ?, height, width]). Returns whether anything changed."""
    image = next(i for i in proto.graph.input if i.name == "image")
    output = next(o for o in proto.graph.output if o.name == "output")
    in_dims = image.type.tensor_type.shape.dim
    out_dims = output.type.tensor_type.shape.dim
    changed = False
    for axis, name in ((2, "out_height"), (3, "out_width")):
        o, i = out_dims[axis], in_dims[axis]
        if o.HasField("dim_param") and o.dim_param == i.dim_param:
            o.dim_param = name
            changed = True
    return changed


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
        "backbone_fp16": (image, steps[-1]),
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
    # the bound this graph must meet (the fp16 backbone's is relative to the float32 output's range)
    tolerance: float = TOLERANCE

    def __str__(self) -> str:
        return (
            f"{self.graph:9s} {self.size[0]}x{self.size[1]}: max |onnxruntime - torch| = {self.max_abs_diff:.3e}"
            f" (limit {self.tolerance:.1e})"
        )

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def verify(model: DiffIRS2, graphs: dict[str, bytes], sizes: list[tuple[int, int]]) -> list[Verification]:
    """Run each graph with onnxruntime and PyTorch on the given LQ sizes; return the max |diff| of each.

    Every graph is compared with its float32 PyTorch function (the fp16 backbone with the float32 backbone)."""
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
            if name not in sessions:
                continue
            reference = "backbone" if name == "backbone_fp16" else name
            with torch.no_grad():
                want = wrappers[reference](*args).numpy()
            feed = {k: a.numpy() for k, a in zip(GRAPHS[name]["inputs"], args, strict=True)}
            got = sessions[name].run(None, feed)[0]
            if got.shape != want.shape:
                raise ExportError(f"{name} at {h}x{w}: onnxruntime gives shape {got.shape}, torch {want.shape}")
            tolerance = FP16_TOLERANCE * float(np.abs(want).max()) if name == "backbone_fp16" else TOLERANCE
            results.append(Verification(name, (h, w), float(np.abs(got - want).max()), tolerance))
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
    fp16: bool = False,
    optimize: bool = True,
) -> list[Verification]:
    """Export, verify, then write the graphs (out/*.onnx) and out/bundle.yaml.

    Nothing is written unless every graph matches PyTorch within its tolerance on two input sizes (TOLERANCE;
    FP16_TOLERANCE of the output's range for the optional fp16 backbone, `fp16=True`). `optimize` applies the
    export-time rewrites of the float32 backbone (graph_opt.REWRITES) before that verification.
    """
    out = Path(out)
    if (out / "bundle.yaml").exists() and not overwrite:
        raise ExportError(f"{out}: a bundle already exists (use --overwrite to replace it)")
    model = model.eval()
    args = _graph_inputs(model, example_image(cfg, cfg.size_multiple, cfg.size_multiple, seed=0), seed=0)
    graphs = {n: export_graph(w, n, args[n]) for n, w in _wrappers(model, fp16).items()}
    rewrites: list[str] = []
    if optimize:
        feed = {"image": args["backbone"][0].numpy(), "ipr": args["backbone"][1].numpy()}
        graphs["backbone"], n = graph_opt.channel_means_as_conv(graphs["backbone"], feed)
        if n:
            rewrites = list(graph_opt.REWRITES)
            log(f"backbone: {n} channel means rewritten as 1x1 convolutions")
    results = verify(model, graphs, verification_sizes(cfg))
    for r in results:
        log(str(r))
    failed = [r for r in results if not r.ok]
    if failed:
        worst = failed[0]
        raise ExportError(
            f"verification failed: {worst.graph} at {worst.size[0]}x{worst.size[1]} differs by "
            f"{worst.max_abs_diff:.3e} > {worst.tolerance:.1e}; nothing written"
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
        prov = {**defaults, **provenance, "opset": OPSET}
        if rewrites:
            prov["graph_rewrites"] = rewrites
        write_bundle_yaml(staging / "bundle.yaml", cfg, prov, graphs=list(graphs))
        out.mkdir(parents=True, exist_ok=True)
        for f in sorted(staging.iterdir(), key=lambda p: p.name == "bundle.yaml"):
            f.replace(out / f.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return results


def upgrade_bundle(folder: Path, log=print) -> list[str]:
    """Fix the declarations of a bundle exported by an earlier version in place: the backbone output's spatial
    axes get names of their own (`declare_backbone_output`). Weights and computation are untouched. Returns the
    files changed."""
    folder = Path(folder)
    meta = yaml.safe_load((folder / "bundle.yaml").read_text())
    changed = []
    for name in ("backbone", "backbone_fp16"):
        spec = meta.get("graphs", {}).get(name)
        if not spec:
            continue
        path = folder / spec["file"]
        proto = onnx.load(path)
        if declare_backbone_output(proto):
            tmp = path.with_name(path.name + ".partial")
            tmp.write_bytes(proto.SerializeToString())
            tmp.replace(path)
            changed.append(path.name)
            log(f"{path}: output declared as [batch, 3, out_height, out_width]")
    return changed
