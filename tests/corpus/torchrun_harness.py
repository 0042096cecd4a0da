"""Run a Python script under `torchrun --standalone` with N CPU processes (gloo), and read
back what each rank wrote: the 2-process tests compare those totals with one process."""

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

TIMEOUT_S = 600
# What a launch prints when its processes could not connect at all (not a failure of the job under test).
RENDEZVOUS_FAILURES = ("connectFullMesh failed", "Could not join the gloo process group", "EADDRINUSE")


@dataclass(frozen=True)
class Launch:
    returncode: int
    stdout: str
    stderr: str
    outputs: dict[int, dict]  # rank -> the JSON it wrote to $OUT_DIR/rank{R}.json


def run_torchrun(script: str, tmp_path: Path, *, nproc: int = 2, env: dict | None = None) -> Launch:
    """Write `script` to a file and run it under torchrun; each rank may write rank{R}.json to $OUT_DIR."""
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent(script))
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    full_env = {**os.environ, "OUT_DIR": str(out), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH", "")]),
                **(env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", str(path)]
    for _ in range(2):  # one retry, only when the processes never met (a rendezvous race on a loaded machine)
        done = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=TIMEOUT_S, cwd=tmp_path)
        if done.returncode == 0 or not any(m in done.stderr for m in RENDEZVOUS_FAILURES):
            break
    outputs = {int(p.stem.removeprefix("rank")): json.loads(p.read_text()) for p in out.glob("rank*.json")}
    return Launch(done.returncode, done.stdout, done.stderr, outputs)


# The lines a script starts with: the rank and a writer for its JSON.
PRELUDE = """
import json, os
import torch
torch.set_num_threads(1)
RANK = int(os.environ.get("RANK", "0"))
def write(obj):
    path = os.path.join(os.environ["OUT_DIR"], f"rank{RANK}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f)
    os.replace(path + ".tmp", path)
"""
