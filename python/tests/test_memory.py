"""A 4000×3000 float32 image restored tiled stays within the plan's memory bound: its workers' budget
(max_memory) plus the image-sized buffers a restore holds. Peak memory is a property of a process, so the
restore runs in a child that reports its resident memory before the restore and its peak during it."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import BUNDLES

H, W = 3000, 4000
# The image-sized float32 buffers (3 × 4 bytes a pixel, the model being x1) a tiled restore holds at once:
# while tiles run, the input as float32, the padded network input and the output being assembled; after,
# the output and the returned array. One more copy (137 MiB here) would break the bound.
IMAGE_BUFFERS = 3
BUDGET = 64 * 2**20
# Thread stacks, allocator slack and the runtime's bookkeeping.
SLACK = 48 * 2**20

CHILD = """
import json, sys
import numpy as np
import diffir

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise KeyError(field)

bundle, backend, h, w, budget = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
pipeline = diffir.Pipeline(bundle, backend=backend, max_memory=budget)
image = np.random.default_rng(0).random((h, w, 3), dtype=np.float32)
pipeline.restore(image[:64, :64])  # every session and plan built
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) starts again from here
before = status("VmRSS:")
out = pipeline.restore(image)
assert out.shape == (h, w, 3) and out.dtype == np.float32
print(json.dumps({"before": before, "peak": status("VmHWM:"), "plan": pipeline.info["plan"]}))
"""


def test_a_large_float32_image_stays_within_the_plans_bound(backend):
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(BUNDLES / "sr_x1"), backend, str(H), str(W), str(BUDGET)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    grew = m["peak"] - m["before"]
    bound = IMAGE_BUFFERS * H * W * 3 * 4 + BUDGET + SLACK
    print(f"{backend}: peak grew {grew / 2**20:.0f} MiB; bound {bound / 2**20:.0f} MiB; plan {m['plan']}")
    assert m["plan"]["tile"] > 0, "the image was not tiled"
    assert grew <= bound, f"the restore grew {grew / 2**20:.0f} MiB, over the bound of {bound / 2**20:.0f} MiB"
