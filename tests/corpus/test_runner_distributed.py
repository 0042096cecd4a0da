"""li.corpus under torchrun with 2 gloo processes: the same totals as one process; a dead worker fails the job."""

import pytest
from torchrun_harness import PRELUDE, run_torchrun

pytestmark = pytest.mark.backend_generic

SCRIPT = PRELUDE + """
from pathlib import Path
import lens_inversion as li
model = li.load_model("tiny")
TEXTS = [f"The sky is blue number {i}. " * (1 + i % 5) for i in range(23)]
def stat(batch):
    return {"tokens": batch.mask.sum(), "ids": (batch.tokens * batch.mask).sum().double(),
            "pair": torch.stack([batch.tokens[:, 0].sum(), batch.tokens[:, -1].sum()]).double()}
got = li.corpus(model, TEXTS, stat, seq_len=16, batch_size=2, progress=False)
write({"totals": {k: v.tolist() for k, v in got.totals.items()}, "run": got.run.to_dict()})
"""


def test_two_gloo_processes_give_the_one_process_totals(tmp_path):
    import torch

    import lens_inversion as li

    two = run_torchrun(SCRIPT, _dir(tmp_path, "two"), nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    model = li.load_model("tiny")
    texts = [f"The sky is blue number {i}. " * (1 + i % 5) for i in range(23)]

    def stat(batch):
        return {"tokens": batch.mask.sum(), "ids": (batch.tokens * batch.mask).sum().double(),
                "pair": torch.stack([batch.tokens[:, 0].sum(), batch.tokens[:, -1].sum()]).double()}

    alone = li.corpus(model, texts, stat, seq_len=16, batch_size=2, progress=False)
    assert set(two.outputs) == {0, 1}
    for rank in (0, 1):
        out = two.outputs[rank]
        assert out["run"]["world_size"] == 2 and out["run"]["backend"] == "gloo"
        assert out["totals"]["tokens"] == int(alone["tokens"])
        assert out["totals"]["ids"] == pytest.approx(float(alone["ids"]), rel=1e-12)
        assert out["totals"]["pair"] == pytest.approx(alone["pair"].tolist(), rel=1e-12)
        assert out["run"]["items"] == alone.run.items and out["run"]["tokens"] == alone.run.tokens


def _dir(tmp_path, name):
    path = tmp_path / name
    path.mkdir()
    return path


DYING = PRELUDE + """
import lens_inversion as li
model = li.load_model("tiny")
TEXTS = [f"The sky is blue number {i}." for i in range(40)]
def stat(batch):
    if RANK == 1 and int(batch.tokens[0, 1]) >= 0 and stat.calls == 2:
        os._exit(17)  # a worker killed mid-job
    stat.calls += 1
    return {"tokens": batch.mask.sum()}
stat.calls = 0
try:
    got = li.corpus(model, TEXTS, stat, seq_len=8, batch_size=1, progress=False)
    write({"result": int(got["tokens"])})
except li.DistributedError as error:
    write({"error": str(error)})
    raise SystemExit(1)
"""


def test_a_killed_worker_fails_the_job_and_no_rank_returns_a_total(tmp_path):
    launch = run_torchrun(DYING, tmp_path, nproc=2, env={"LENS_INVERSION_DIST_TIMEOUT": "60"})
    assert launch.returncode != 0
    assert all("result" not in out for out in launch.outputs.values()), launch.outputs
    if 0 in launch.outputs:  # rank 0 saw its peer go before torchrun stopped it
        assert "peer process died" in launch.outputs[0]["error"]
