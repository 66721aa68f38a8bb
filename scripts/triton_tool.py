"""Helpers for diffir's Triton tests and benchmark, on Triton's own Python packages.

  python scripts/triton_tool.py server                 prepare nvidia-pytriton's tritonserver; print its path
  python scripts/triton_tool.py check-configs REPO     parse every config.pbtxt against Triton's schema
  python scripts/triton_tool.py check-proto DESC       check diffir's compiled proto/inference.proto
                                                       (a FileDescriptorSet) against tritonclient's
  python scripts/triton_tool.py shim REPO OUT          a Python-backend copy of REPO for the tests
  python scripts/triton_tool.py stats HOST:PORT MODEL  the batch sizes the server formed (JSON)

Each prints JSON (or a path) on success and exits 1 with the reason on failure; where a package is missing
it exits 3 so the tests can say what to install.
"""

import json
import os
import shutil
import stat
import sys
from pathlib import Path

SHIM = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "triton_shim" / "model.py"


def _import(name):
    try:
        return __import__(name, fromlist=["_"])
    except ImportError as e:
        print(f"missing Python package for {name}: {e} (pip install nvidia-pytriton==0.7.0 tritonclient[grpc])")
        sys.exit(3)


def server():
    """The tritonserver of nvidia-pytriton, with the Python backend stub for this Python put in place."""
    pytriton = _import("pytriton")
    root = Path(pytriton.__file__).parent / "tritonserver"
    binary = root / "bin" / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    target = root / "backends" / "python" / "triton_python_backend_stub"
    if not binary.is_file() or not stub.is_file():
        print(f"nvidia-pytriton at {root} has no tritonserver or no Python {version} backend stub")
        sys.exit(1)
    if not target.is_file() or target.stat().st_size != stub.stat().st_size:
        shutil.copy2(stub, target)
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    print(binary)


def check_configs(repo):
    """Parse each model's config.pbtxt strictly (unknown fields fail) with Triton's compiled schema."""
    _import("tritonclient.grpc")
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    found = {}
    for cfg in sorted(Path(repo).glob("*/config.pbtxt")):
        config = text_format.Parse(cfg.read_text(), model_config_pb2.ModelConfig())
        if config.name != cfg.parent.name:
            print(f"{cfg}: name '{config.name}' is not the folder's name")
            sys.exit(1)
        found[config.name] = json_format.MessageToDict(config)
    if not found:
        print(f"{repo}: no */config.pbtxt")
        sys.exit(1)
    print(json.dumps(found))


def _messages(fd, prefix, out):
    for m in fd:
        name = f"{prefix}.{m.name}"
        out[name] = m
        _messages(m.nested_type, name, out)


def check_proto(path):
    """Every service, RPC, message and field of diffir's proto must exist in Triton's with the same
    number, type, label and message type."""
    _import("tritonclient.grpc")
    from google.protobuf import descriptor_pb2
    from tritonclient.grpc import model_config_pb2, service_pb2

    ours = descriptor_pb2.FileDescriptorSet.FromString(Path(path).read_bytes())
    theirs_files = []
    for module in (service_pb2, model_config_pb2):
        fp = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(fp)
        theirs_files.append(fp)
    theirs, mine = {}, {}
    for fp in theirs_files:
        _messages(fp.message_type, f".{fp.package}", theirs)
    services = {f".{fp.package}.{s.name}": s for fp in theirs_files for s in fp.service}
    checked = {"messages": 0, "fields": 0, "rpcs": 0}
    problems = []
    for fp in ours.file:
        _messages(fp.message_type, f".{fp.package}", mine)
        for s in fp.service:
            full = f".{fp.package}.{s.name}"
            if full not in services:
                problems.append(f"service {full} is not Triton's")
                continue
            rpcs = {m.name: m for m in services[full].method}
            for m in s.method:
                t = rpcs.get(m.name)
                if t is None or (t.input_type, t.output_type) != (m.input_type, m.output_type):
                    problems.append(f"rpc {full}.{m.name}: ours {m.input_type} -> {m.output_type}, Triton's {t}")
                checked["rpcs"] += 1
    for name, m in mine.items():
        t = theirs.get(name)
        if t is None:
            problems.append(f"message {name} is not Triton's")
            continue
        if m.options.map_entry != t.options.map_entry:
            problems.append(f"message {name}: map entry differs")
        tf = {f.name: f for f in t.field}
        for f in m.field:
            g = tf.get(f.name)
            if g is None:
                problems.append(f"field {name}.{f.name} is not Triton's")
                continue
            ours_f = (f.number, f.type, f.label, f.type_name, f.HasField("oneof_index"))
            theirs_f = (g.number, g.type, g.label, g.type_name, g.HasField("oneof_index"))
            if ours_f != theirs_f:
                problems.append(f"field {name}.{f.name}: ours {ours_f}, Triton's {theirs_f}")
            checked["fields"] += 1
        checked["messages"] += 1
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print(json.dumps(checked))


def shim(repo, out):
    """Copy REPO to OUT with each model on the Python backend running its model.onnx (tests only)."""
    _import("tritonclient.grpc")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    out = Path(out)
    for cfg in sorted(Path(repo).glob("*/config.pbtxt")):
        config = text_format.Parse(cfg.read_text(), model_config_pb2.ModelConfig())
        config.platform = ""
        config.backend = "python"
        config.ClearField("optimization")
        for group in config.instance_group:
            group.kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
        dest = out / cfg.parent.name
        shutil.copytree(cfg.parent, dest, dirs_exist_ok=True)
        (dest / "config.pbtxt").write_text(text_format.MessageToString(config))
        for version in dest.iterdir():
            if version.is_dir() and (version / "model.onnx").is_file():
                shutil.copy2(SHIM, version / "model.py")
    print(out)


def stats(url, model):
    """Inference and execution counts, and the batch sizes the server formed, from its statistics API."""
    grpcclient = _import("tritonclient.grpc")
    client = grpcclient.InferenceServerClient(url)
    s = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    batches = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in s.get("batch_stats", [])}
    print(
        json.dumps(
            {
                "model": model,
                "inferences": int(s.get("inference_count", 0)),
                "executions": int(s.get("execution_count", 0)),
                "batch_sizes": dict(sorted(batches.items())),
            }
        )
    )


def main(argv):
    commands = {
        "server": server,
        "check-configs": check_configs,
        "check-proto": check_proto,
        "shim": shim,
        "stats": stats,
    }
    if not argv or argv[0] not in commands:
        print(__doc__)
        return 2
    commands[argv[0]](*argv[1:])
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))
