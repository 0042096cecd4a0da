"""Tuned-lens training data-parallel: 2 gloo processes train the translators 1 process trains.

Every rank must end with the same translators, bit for bit, and those must equal a single
process's up to the float rounding of the gradient sum; a rank with no chunk in a step adds
zero gradients; only rank 0 writes the checkpoint, and every rank resumes from it.
"""

import pytest
import torch
from torchrun_harness import PRELUDE, run_torchrun

from lens_inversion.corpus.distributed import World
from lens_inversion.hooks.adapter import adapter_for
from lens_inversion.hooks.preserve import preserved
from lens_inversion.lens import tuned_training
from lens_inversion.lens.token_stream import token_chunks
from lens_inversion.lens.tuned import TunedLens
from lens_inversion.models.corpus import documents

pytestmark = pytest.mark.backend_generic

BASE = dict(steps=4, seq_len=32, micro_batch=1, progress=False)
CASES = {  # name -> options; the step batch has 4, 3 and 1 chunks (the last: fewer chunks than ranks)
    "even": dict(BASE, tokens_per_step=4 * 32),
    "odd": dict(BASE, tokens_per_step=3 * 32, loss="cross_entropy", sublayers=True),
    "one": dict(BASE, tokens_per_step=32, optimizer="adam", shuffle_buffer=8, seed=2),
}

SCRIPT = PRELUDE + f"""
import torch.distributed as dist
import lens_inversion as li
from lens_inversion.lens import tuned_training
from lens_inversion.models.corpus import documents
dist.init_process_group("gloo")  # held open: `joined` then reuses it for every training below
model = li.load_model("tiny")
CORPUS = list(documents(60, seed=0))
CASES = {CASES!r}
result = {{}}
def keep(name, lens):
    torch.save(lens.state_dict(), os.path.join(os.environ["OUT_DIR"], f"{{name}}.rank{{RANK}}.pt"))
    result[name] = {{"loss": lens.metadata["final_loss"], "processes": lens.metadata["processes"],
                    "tokens": lens.metadata["tokens_seen"]}}
for name, options in CASES.items():
    keep(name, li.TunedLens.train(model, CORPUS, **options))

real_step, real_save, saves = tuned_training._train_step, tuned_training._save_checkpoint, []
def interrupted(adapter, lens, optimizer, batch, opts, step):
    if step == 3:
        raise KeyboardInterrupt
    return real_step(adapter, lens, optimizer, batch, opts, step)
def counted(*args):
    saves.append(args[4].step)
    real_save(*args)
tuned_training._save_checkpoint = counted
tuned_training._train_step = interrupted
try:
    li.TunedLens.train(model, CORPUS, checkpoint="run.ckpt", checkpoint_every=2, **CASES["even"])
except KeyboardInterrupt:
    pass
tuned_training._train_step = real_step
keep("resumed", li.TunedLens.train(model, CORPUS, checkpoint="run.ckpt", checkpoint_every=2, **CASES["even"]))
result["saves"] = saves
try:  # rank 1 cannot see the checkpoint rank 0 resumes from
    li.TunedLens.train(model, CORPUS, checkpoint="run.ckpt" if RANK == 0 else "elsewhere.ckpt", **CASES["even"])
except li.DistributedError as error:
    result["unshared"] = str(error)
write(result)
"""


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """The 2-process run: (each rank's JSON, a loader of each rank's saved lens state)."""
    tmp = tmp_path_factory.mktemp("train2")
    launch = run_torchrun(SCRIPT, tmp, nproc=2)
    assert launch.returncode == 0, launch.why()
    assert set(launch.outputs) == {0, 1}
    return launch.outputs, lambda name, rank: torch.load(tmp / "out" / f"{name}.rank{rank}.pt", weights_only=True)


@pytest.fixture(scope="module")
def corpus():
    return list(documents(60, seed=0))


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_processes_train_what_one_trains(two, tiny, corpus, name):
    outputs, state = two
    alone = TunedLens.train(tiny, corpus, **CASES[name])
    rank0, rank1 = state(name, 0), state(name, 1)
    for key, want in alone.state_dict().items():
        assert torch.equal(rank0[key], rank1[key]), key  # every rank holds the same translators
        torch.testing.assert_close(rank0[key], want, atol=1e-5, rtol=0, msg=key)
    assert outputs[0][name] == outputs[1][name]
    assert outputs[0][name]["processes"] == 2 and outputs[0][name]["tokens"] == alone.metadata["tokens_seen"]
    assert outputs[0][name]["loss"] == pytest.approx(alone.metadata["final_loss"], rel=1e-5)


def test_only_rank_0_checkpoints_and_every_rank_resumes_bit_identical(two):
    outputs, state = two
    assert outputs[0]["saves"] == [2, 4] and outputs[1]["saves"] == []  # rank 0 saved at steps 2 and (resumed) 4
    straight = state("even", 0)
    for rank in (0, 1):
        resumed = state("resumed", rank)
        assert all(torch.equal(resumed[k], v) for k, v in straight.items()), rank


def test_a_checkpoint_not_every_rank_reads_is_refused(two):
    outputs, _ = two
    for rank in (0, 1):
        assert "resume from different steps" in outputs[rank]["unshared"]
        assert "file system they all share" in outputs[rank]["unshared"]


@pytest.mark.parametrize("chunks", [4, 1])
def test_rank_shares_sum_to_the_whole_batch_gradient(tiny, corpus, chunks):
    """In one process: the local gradients of ranks 0..2 of 3 add up to autograd's on the whole batch."""
    adapter = adapter_for(tiny)
    opts = tuned_training.TrainOptions(tokens_per_step=chunks * 32, seq_len=32, micro_batch=1)
    batch = torch.stack(list(token_chunks(adapter, corpus, seq_len=32))[:chunks])
    lens = TunedLens.from_model(tiny).requires_grad_(True)
    with preserved(tiny):
        want_sums = tuned_training._accumulate(adapter, lens, batch, "kl", n_tokens=batch.numel())
        want = torch.cat([p.grad.reshape(-1) for p in lens.parameters()])
        shares = [tuned_training._StepBatch.of(batch, World(rank, 3), "kl") for rank in range(3)]
        local = [tuned_training._local_gradients(adapter, lens, share, opts) for share in shares]
    for rank, share in enumerate(shares):
        assert torch.equal(share.chunks, batch[[i for i in range(chunks) if i % 3 == rank]])
        assert share.n_tokens == batch.numel()
    torch.testing.assert_close(sum(flat for flat, _ in local), want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(sum(sums for _, sums in local), torch.tensor(want_sums, dtype=torch.float64), rtol=1e-4, atol=0)
    if chunks == 1:  # ranks 1 and 2 have no chunk: zero gradients
        assert not any(flat.any() or sums.any() for flat, sums in local[1:])
