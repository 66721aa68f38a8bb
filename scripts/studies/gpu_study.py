"""Where onnxruntime's CUDA time goes on the real-size realsr_x4 backbone, and which graph or option fixes it.

Runs on the GPU machine with onnxruntime-gpu's Python module importable (scripts/gpu-check.sh stages it) and
prints markdown tables; `--device cpu` runs every step on the CPU at small sizes to check the script itself.

1. Per-op micro-benchmarks at the model's real shapes (LR 256): PyTorch eager vs onnxruntime, including the
   depthwise 3x3 convolution as exported, in NHWC, in float16, and as block-diagonal grouped convolutions.
2. Kernel profile of steady-state runs (warm-up excluded) of the whole backbone, onnxruntime vs PyTorch.
3. Whole-backbone variants at LR 256 (static shapes, NHWC, grouped depthwise, float16, CUDA graphs), then the
   baseline and the best variant at LR 64/128/256 against PyTorch eager, with max |diff| to float32 PyTorch.
Writes the numbers to --json.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
import yaml
from onnx import helper, numpy_helper
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "export"))
from diffir_export.arch import DiffIRS2
from diffir_export.arch.dirformer import LayerNormBody
from diffir_export.config import ModelConfig
from diffir_export.onnx_export import DYNAMIC_AXES, OPSET
from diffir_export.rewrite import group_depthwise

DEV = "cuda"
TRACE_DIR = ""


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def export(module: nn.Module, args: tuple, names: list[str], out: str, dynamic: dict | None = None) -> bytes:
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, input_names=names, output_names=[out], dynamic_axes=dynamic,
                          opset_version=OPSET, do_constant_folding=True, dynamo=False)  # fmt: skip
    return buf.getvalue()


def session(model: bytes, cuda_opts: dict | None = None, static: dict | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    for k, v in (static or {}).items():
        so.add_free_dimension_override_by_name(k, v)
    if DEV == "cuda":
        providers = [("CUDAExecutionProvider", {"device_id": "0", **(cuda_opts or {})})]
    else:
        providers = ["CPUExecutionProvider"]
    return ort.InferenceSession(model, so, providers=providers)


def time_ort(sess: ort.InferenceSession, feeds: dict[str, np.ndarray], out_shape, out_dtype, runs: int):
    """Median ms of `runs` runs after 3 warm-ups, inputs and output bound on the device; and the output."""
    io_b = sess.io_binding()
    dev = "cuda" if DEV == "cuda" else "cpu"
    keep = []
    for k, v in feeds.items():
        ov = ort.OrtValue.ortvalue_from_numpy(v, dev, 0)
        keep.append(ov)
        io_b.bind_ortvalue_input(k, ov)
    out = ort.OrtValue.ortvalue_from_shape_and_type(list(out_shape), out_dtype, dev, 0)
    io_b.bind_ortvalue_output(sess.get_outputs()[0].name, out)
    for _ in range(3):
        sess.run_with_iobinding(io_b)
    sync()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run_with_iobinding(io_b)
        sync()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts), out.numpy()


def time_torch(fn, runs: int) -> tuple[float, torch.Tensor]:
    with torch.inference_mode():
        for _ in range(3):
            y = fn()
        sync()
        ts = []
        for _ in range(runs):
            t = time.perf_counter()
            y = fn()
            sync()
            ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts), y


class Fn(nn.Module):
    def __init__(self, f) -> None:
        super().__init__()
        self.f = f

    def forward(self, *a):
        return self.f(*a)


def micro(args, rows: list) -> None:
    s = args.micro_size
    g = torch.Generator().manual_seed(0)

    def case(name: str, module: nn.Module, shapes: list, half: bool = False, variants=(("default", {}),)):
        module = module.eval().to(DEV)
        xs = [torch.rand(*sh, generator=g).to(DEV) for sh in shapes]
        if half:
            module, xs = module.half(), [x.half() for x in xs]
        pt, y = time_torch(lambda: module(*xs), args.runs)
        model = export(module, tuple(xs), [f"x{i}" for i in range(len(xs))], "y")
        feeds = {f"x{i}": x.cpu().numpy() for i, x in enumerate(xs)}
        for vname, opts in variants:
            try:
                ms, got = time_ort(session(model, opts), feeds, y.shape, np.float16 if half else np.float32, args.runs)
                err = float(np.abs(got.astype(np.float32) - y.float().cpu().numpy()).max())
                rows.append((name, vname, pt, ms, err))
            except Exception as e:  # noqa: BLE001 - report and go on
                rows.append((name, vname, pt, None, str(e).splitlines()[0][:80]))
            print(fmt_micro(rows[-1]), flush=True)

    nhwc = (("default", {}), ("prefer_nhwc", {"prefer_nhwc": "1"}))
    c = 562
    case(f"depthwise 3x3 {c}ch", nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), [(1, c, s, s)],
         variants=nhwc + (("heuristic", {"cudnn_conv_algo_search": "HEURISTIC"}),))  # fmt: skip
    case(f"depthwise 3x3 {c}ch fp16", nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), [(1, c, s, s)], True,
         variants=nhwc)  # fmt: skip
    for k in (4, 8, 16, 32):
        cp = -(-c // k) * k
        case(f"grouped 3x3 {cp}ch, {k}/group", nn.Conv2d(cp, cp, 3, padding=1, groups=cp // k, bias=False),
             [(1, cp, s, s)], variants=nhwc)  # fmt: skip
    case("1x1 conv 128->562", nn.Conv2d(128, 562, 1, bias=False), [(1, 128, s, s)],
         variants=(("default", {}), ("no tf32", {"use_tf32": "0"})))  # fmt: skip
    case("tail 3x3 conv 128->512 at 2x", nn.Conv2d(128, 512, 3, padding=1), [(1, 128, 2 * s, 2 * s)],
         variants=(("default", {}), ("no tf32", {"use_tf32": "0"}), ("prefer_nhwc", {"prefer_nhwc": "1"})))  # fmt: skip
    case("q @ k^T (128 x HW)", Fn(lambda q, k: q @ k.transpose(-2, -1)), [(1, 1, 128, s * s)] * 2)
    case("LayerNorm BiasFree 128ch", LayerNormBody(128, with_bias=False), [(1, 128, s, s)])
    case("L2 normalise over HW", Fn(lambda q: q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)), [(1, 1, 128, s * s)])
    case("GELU gate 562ch", Fn(lambda x: F.gelu(x[:, :281]) * x[:, 281:]), [(1, 562, s, s)])


def fmt_micro(r) -> str:
    name, v, pt, ms, err = r
    if ms is None:
        return f"| {name} | {v} | {pt:.3f} | failed: {err} | | |"
    return f"| {name} | {v} | {pt:.3f} | {ms:.3f} | {ms / pt:.2f} | {err:.1e} |"


class Backbone(nn.Module):
    """G with float32 I/O; `half` runs the body in float16 (reductions stay float32, see DIRformer)."""

    def __init__(self, g: nn.Module, half: bool) -> None:
        super().__init__()
        self.g, self.half_ = g, half

    def forward(self, image, ipr):
        if self.half_:
            return self.g(image.half(), ipr.half()).float()
        return self.g(image, ipr)


def kernel_table(prof, top: int) -> list[tuple[str, float, int]]:
    """Device kernels grouped by name: (name, total ms, calls), the total first."""
    agg: dict[str, list] = {}
    for e in prof.events():
        if "CUDA" not in str(getattr(e, "device_type", "")):
            continue
        a = agg.setdefault(e.name, [0.0, 0])
        a[0] += e.time_range.elapsed_us() / 1e3
        a[1] += 1
    total = sum(a[0] for a in agg.values())
    rows = sorted(((n[:90], a[0], a[1]) for n, a in agg.items()), key=lambda r: -r[1])
    return [("TOTAL", total, sum(a[1] for a in agg.values()))] + rows[:top]


def profile(label: str, fn, runs: int = 3) -> list:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprof

    acts = [ProfilerActivity.CUDA] if DEV == "cuda" else [ProfilerActivity.CPU]
    fn()
    sync()
    with tprof(activities=acts) as prof:
        for _ in range(runs):
            fn()
        sync()
    rows = kernel_table(prof, 14)
    if TRACE_DIR:
        n = len(list(Path(TRACE_DIR).glob("trace*.json")))
        prof.export_chrome_trace(str(Path(TRACE_DIR) / f"trace{n}.json"))
    print(
        f"\nkernel profile, {label}, {runs} steady-state runs (ms per run):\n"
        "| kernel | ms | % | calls |\n|---|---|---|---|"
    )
    total = rows[0][1] or 1.0
    for n, ms, calls in rows:
        print(f"| {n} | {ms / runs:.2f} | {100 * ms / total:.0f} | {calls // runs} |")
    return [(n, ms / runs, calls // runs) for n, ms, calls in rows]


def main() -> int:
    global DEV, TRACE_DIR
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[2] / "configs/realsr_x4.yaml"))
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--micro-size", type=int, default=256)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--skip-micro", action="store_true")
    p.add_argument("--grouped", type=int, nargs="*", default=[], help="also time grouped-depthwise rewrites (k/group)")
    p.add_argument("--json", default="gpu_study.json")
    p.add_argument("--bundle-out", help="export a realsr_x4 bundle (random weights) here with the best rewrite")
    p.add_argument("--trace-dir", default="", help="write chrome traces of the profiled runs here")
    args = p.parse_args()
    DEV, TRACE_DIR = args.device, args.trace_dir
    results: dict = {"device": torch.cuda.get_device_name() if DEV == "cuda" else "CPU",
                     "torch": torch.__version__, "onnxruntime": ort.__version__,
                     "cudnn": torch.backends.cudnn.version(),
                     "tf32_conv_torch": torch.backends.cudnn.allow_tf32}  # fmt: skip
    print(results, flush=True)

    micro_rows: list = []
    if not args.skip_micro:
        print(f"\nmicro-benchmarks at LR {args.micro_size} (median ms):\n"
              "| op | onnxruntime option | PyTorch | onnxruntime | ratio | max abs diff |\n"
              "|---|---|---|---|---|---|")  # fmt: skip
        micro(args, micro_rows)
    results["micro"] = micro_rows

    cfg = ModelConfig.from_dict(yaml.safe_load(Path(args.config).read_text()))
    torch.manual_seed(0)
    model = DiffIRS2(cfg).eval()
    for prm in model.parameters():  # trained-like magnitudes keep activations in range for float16
        prm.data.mul_(0.5)
    g32 = model.G.to(DEV)
    big = max(args.sizes)
    gen = torch.Generator().manual_seed(1)
    inputs = {
        s: (torch.rand(1, 3, s, s, generator=gen), torch.randn(1, cfg.ipr_dim, generator=gen)) for s in args.sizes
    }

    def torch_run(s):
        x, i = inputs[s]
        x, i = x.to(DEV), i.to(DEV)
        return time_torch(lambda: g32(x, i), args.runs)

    ex = (torch.rand(1, 3, 32, 32), torch.randn(1, cfg.ipr_dim))
    axes = DYNAMIC_AXES["backbone"]
    t0 = time.time()
    graphs = {"fp32": export(Backbone(copy.deepcopy(model.G).cpu(), False), ex, ["image", "ipr"], "output", axes)}
    graphs["fp32r"] = rewrite_reduce_l2(graphs["fp32"])
    for k in args.grouped:
        g = group_depthwise(copy.deepcopy(model.G).cpu(), k)
        graphs[f"grouped{k}"] = rewrite_reduce_l2(export(Backbone(g, False), ex, ["image", "ipr"], "output", axes))
    if DEV == "cuda":
        gh = copy.deepcopy(model.G).to(DEV).half()
        fp16 = export(Backbone(gh, True), tuple(t.to(DEV) for t in ex), ["image", "ipr"], "output", axes)
        graphs["fp16r"] = rewrite_reduce_l2(fp16)
    print(f"\nexported {len(graphs)} backbone graphs in {time.time() - t0:.0f} s", flush=True)

    def static(s):
        return {"batch": 1, "height": s, "width": s}

    cache: dict = {}

    def ort_session(graph: str, s: int, opts: dict, fixed: bool):
        key = (graph, tuple(sorted(opts.items())), s if fixed else None)
        if key not in cache:
            cache[key] = session(graphs[graph], opts, static(s) if fixed else None)
        return cache[key]

    def ort_run(graph: str, s: int, opts: dict, fixed: bool):
        x, i = inputs[s]
        sess = ort_session(graph, s, opts, fixed)
        return time_ort(sess, {"image": x.numpy(), "ipr": i.numpy()}, (1, 3, 4 * s, 4 * s), np.float32, args.runs)

    ref = {}
    pt_ms = {}
    for s in args.sizes:
        pt_ms[s], y = torch_run(s)
        ref[s] = y.float().cpu().numpy()
    print("PyTorch eager ms: " + ", ".join(f"LR {s}: {pt_ms[s]:.1f}" for s in args.sizes), flush=True)

    variants = [
        ("fp32 as exported, dynamic shapes", "fp32", {}, False),
        ("fp32 ReduceL2 rewritten, static", "fp32r", {}, True),
        ("fp32 ReduceL2 rewritten, static, nhwc", "fp32r", {"prefer_nhwc": "1"}, True),
    ]
    variants += [(f"grouped {k}/group rewritten, static", f"grouped{k}", {}, True) for k in args.grouped]
    if "fp16r" in graphs:
        variants += [("fp16 ReduceL2 rewritten, static", "fp16r", {}, True)]
    print(
        f"\nwhole backbone at LR {big} (median ms):\n"
        "| variant | onnxruntime | / PyTorch | max abs diff vs PyTorch fp32 |\n|---|---|---|---|"
    )
    var_rows = []
    for name, graph, opts, fixed in variants:
        try:
            ms, out = ort_run(graph, big, opts, fixed)
            err = float(np.abs(out - ref[big]).max())
            var_rows.append((name, graph, opts, fixed, ms, err))
            print(f"| {name} | {ms:.1f} | {ms / pt_ms[big]:.2f} | {err:.1e} |", flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"| {name} | failed: {str(e).splitlines()[0][:100]} | | |", flush=True)
    results["variants"] = var_rows
    # diffir rewrites ReduceL2 on GPU sessions, so its choices are among the rewritten graphs
    exact = [r for r in var_rows if r[1] != "fp32" and not r[1].startswith("fp16")]
    Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    if not exact:
        return 1
    best = min(exact, key=lambda r: r[4])
    best16 = min((r for r in var_rows if r[1] != "fp32"), key=lambda r: r[4])
    print(f"best float32 variant: {best[0]}; best overall: {best16[0]}", flush=True)

    results["best"] = best[:4]
    results["best_overall"] = best16[:4]
    Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    if args.bundle_out:
        from diffir_export.onnx_export import export_bundle

        k = int(best[1][len("grouped") :]) if best[1].startswith("grouped") else 1
        m = copy.deepcopy(model).cpu()
        group_depthwise(m.G, k)
        export_bundle(m, cfg, Path(args.bundle_out), {"checkpoint": "random weights (gpu_study)"}, log=lambda s: None)
        print(f"bundle with {k} channels per depthwise group: {args.bundle_out}", flush=True)

    graph_opts = {"enable_cuda_graph": "1"}
    cuda_graph = DEV == "cuda"
    if cuda_graph:
        # CUDA graphs: one captured launch per run (needs static shapes and I/O bound to fixed device buffers).
        for r in (best, best16):
            try:
                ms, out = ort_run(r[1], big, {**r[2], **graph_opts}, True)
                print(
                    f"| {r[0]} + CUDA graph | {ms:.1f} | {ms / pt_ms[big]:.2f} | {np.abs(out - ref[big]).max():.1e} |"
                )
            except Exception as e:  # noqa: BLE001
                print(f"| {r[0]} + CUDA graph | failed: {str(e).splitlines()[0][:100]} | | |")
                cuda_graph = False

    x, i = inputs[big]
    feeds = {"image": x.numpy(), "ipr": i.numpy()}
    sess_best = ort_session(best[1], big, best[2], True)
    results["profile_ort_best"] = profile(f"onnxruntime {best[0]} LR {big}", lambda: sess_best.run(None, feeds))
    xd, idd = x.to(DEV), i.to(DEV)
    with torch.inference_mode():
        results["profile_torch"] = profile(f"PyTorch eager LR {big}", lambda: g32(xd, idd))

    cols = [("as exported", "fp32", {}, False), (best[0], *best[1:4])]
    if cuda_graph:
        cols.append((best[0] + " + CUDA graph", best[1], {**best[2], **graph_opts}, True))
    if best16 is not best:
        cols.append((best16[0], *best16[1:4]))
        if cuda_graph:
            cols.append((best16[0] + " + CUDA graph", best16[1], {**best16[2], **graph_opts}, True))
    print(
        "\nonnxruntime CUDA vs PyTorch eager (fp32, cuDNN TF32 on as PyTorch defaults), median ms (ratio to PyTorch):"
    )
    print("| LR | PyTorch eager | " + " | ".join(c[0] for c in cols) + " |\n|---|---|" + "---|" * len(cols))
    table = []
    for s in sorted(args.sizes):
        cells = []
        for _, graph, opts, fixed in cols:
            try:
                ms, _ = ort_run(graph, s, opts, fixed)
                cells.append(ms)
            except Exception:  # noqa: BLE001
                cells.append(float("nan"))
        table.append((s, pt_ms[s], cells))
        print(f"| {s} | {pt_ms[s]:.1f} | " + " | ".join(f"{c:.1f} ({c / pt_ms[s]:.2f})" for c in cells) + " |",
              flush=True)  # fmt: skip
    results["table"] = {"columns": [c[0] for c in cols], "rows": table}
    Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


def rewrite_reduce_l2(model: bytes) -> bytes:
    """ReduceL2(x) → Sqrt(ReduceSum(Mul(x, x))), as diffir's runtime does for GPU sessions
    (src/graph_rewrite.rs), so Python measures the graph diffir runs."""
    m = onnx.load_from_string(model)
    nodes = []
    for i, n in enumerate(m.graph.node):
        if n.op_type != "ReduceL2":
            nodes.append(n)
            continue
        axes = next(a.ints for a in n.attribute if a.name == "axes")
        keep = next((a.i for a in n.attribute if a.name == "keepdims"), 1)
        b = f"rewrite/l2_{i}/"
        m.graph.initializer.append(numpy_helper.from_array(np.array(list(axes), np.int64), b + "axes"))
        nodes += [
            helper.make_node("Mul", [n.input[0], n.input[0]], [b + "sq"]),
            helper.make_node("ReduceSum", [b + "sq", b + "axes"], [b + "sum"], keepdims=keep),
            helper.make_node("Sqrt", [b + "sum"], [n.output[0]]),
        ]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m.SerializeToString()


if __name__ == "__main__":
    sys.exit(main())
