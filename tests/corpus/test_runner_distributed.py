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
    assert two.returncode == 0, two.why()
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



# Each rank counts its attempts in a folder outside the launch's own (which a retry cleans);
# rank 1 fails at first with `FIRST_FAILURE`, then succeeds.
FLAKY = PRELUDE + """
from pathlib import Path
tally = Path(os.environ["TALLY"]) / f"rank{RANK}"
tally.write_text(str(attempt := int(tally.read_text()) + 1 if tally.exists() else 1))
stale = Path(f"left_by_rank{RANK}").exists()  # only if the failed launch's files were kept
Path(f"left_by_rank{RANK}").write_text("")
if RANK == 1 and attempt == 1:
    raise RuntimeError(os.environ["FIRST_FAILURE"])
write({"attempt": attempt, "stale": stale})
"""


def _flaky(tmp_path, first_failure):
    tally, work = _dir(tmp_path, "tally"), _dir(tmp_path, "work")
    launch = run_torchrun(FLAKY, work, nproc=2, env={"TALLY": str(tally), "FIRST_FAILURE": first_failure})
    return launch, {p.name: int(p.read_text()) for p in tally.iterdir()}


def test_a_launch_whose_processes_never_met_runs_again_from_a_clean_folder(tmp_path):
    with pytest.warns(UserWarning, match="never met, so the launch runs again"):
        launch, tally = _flaky(tmp_path, "Could not join the gloo process group: timed out")
    assert launch.returncode == 0 and tally == {"rank0": 2, "rank1": 2}
    assert launch.errors == {} and launch.outputs == {0: {"attempt": 2, "stale": False}, 1: {"attempt": 2, "stale": False}}


def test_a_failed_launch_names_each_rank_s_own_traceback(tmp_path):
    """The harness keeps the exception that ended a rank, so a CI failure shows its root cause; a
    failure of the job itself is never launched again."""
    launch, tally = _flaky(tmp_path, "rank one could not start")
    assert launch.returncode != 0 and tally == {"rank0": 1, "rank1": 1}
    assert set(launch.errors) == {1} and launch.outputs == {0: {"attempt": 1, "stale": False}}
    assert launch.errors[1].rstrip().endswith("RuntimeError: rank one could not start")
    assert launch.why().startswith("--- rank 1 ---\nTraceback")
