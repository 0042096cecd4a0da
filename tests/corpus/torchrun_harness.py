"""Run a Python script under `torchrun --standalone` with N CPU processes (gloo), and read
back what each rank wrote: the 2-process tests compare those totals with one process."""

import json
import os
import subprocess
import sys
import textwrap
import warnings
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
    errors: dict[int, str]  # rank -> the traceback that ended it ($OUT_DIR/rank{R}.error)

    def why(self, tail: int = 3000) -> str:
        """Each failed rank's own traceback, then the end of stderr: torchrun's summary names the first
        rank to fail but keeps its traceback only in the interleaved stream, which a tail can cut off."""
        own = "".join(f"--- rank {rank} ---\n{text}\n" for rank, text in sorted(self.errors.items()))
        return own + "--- stderr (end) ---\n" + self.stderr[-tail:]


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
    before = set(tmp_path.rglob("*"))
    for attempt in range(2):  # one retry, only when the processes never met (a rendezvous race on a loaded machine)
        _remove_new(tmp_path, before)  # a retry starts clean: no checkpoint or output of the failed launch
        done = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=TIMEOUT_S, cwd=tmp_path)
        launch = Launch(done.returncode, done.stdout, done.stderr, _read(out, "json", json.loads), _read(out, "error", str))
        if done.returncode == 0 or not any(m in done.stderr for m in RENDEZVOUS_FAILURES):
            return launch
        if attempt == 0:
            warnings.warn(f"torchrun: the processes never met, so the launch runs again:\n{launch.why()}", stacklevel=2)
    return launch


def _remove_new(folder: Path, before: set[Path]) -> None:
    for path in sorted(set(folder.rglob("*")) - before, reverse=True):  # a folder's files before the folder
        path.rmdir() if path.is_dir() else path.unlink()


def _read(out: Path, suffix: str, parse) -> dict:
    return {int(p.stem.removeprefix("rank")): parse(p.read_text()) for p in out.glob(f"rank*.{suffix}")}


# The lines a script starts with: the rank, a writer for its JSON, and a hook that keeps the
# traceback of an exception that ends the rank in rank{R}.error.
PRELUDE = """
import json, os, sys, traceback
import torch
torch.set_num_threads(1)
RANK = int(os.environ.get("RANK", "0"))
def _keep_traceback(kind, value, tb):
    with open(os.path.join(os.environ["OUT_DIR"], f"rank{RANK}.error"), "w") as f:
        f.write("".join(traceback.format_exception(kind, value, tb)))
    sys.__excepthook__(kind, value, tb)
sys.excepthook = _keep_traceback
def write(obj):
    path = os.path.join(os.environ["OUT_DIR"], f"rank{RANK}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f)
    os.replace(path + ".tmp", path)
"""
