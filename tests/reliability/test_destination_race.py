"""check_destination when every rank of a torchrun job checks the same path at once.

Stop 32's CI lost a 2-process training run this way: both ranks probed the missing checkpoint
path, one created it first, and the other's exclusive create failed with "File exists".
"""

import multiprocessing
import os

import pytest

from lens_inversion import validation
from lens_inversion.validation import check_destination

REAL_OPEN = os.open


def _peer_acts(monkeypatch, target, before):
    """Before each of this process's os.open calls on `target`, `before(flags)` may act as a peer
    (it returns whether it did); the calls' flags in order, with "peer" where the peer acted."""
    calls = []

    def fake(path, flags, *args):
        if os.fspath(path) == os.fspath(target):
            calls.extend(["peer", flags] if before(flags) else [flags])
        return REAL_OPEN(path, flags, *args)

    monkeypatch.setattr(validation.os, "open", fake)
    return calls


def test_a_peer_s_probe_that_appears_is_left_alone(tmp_path, monkeypatch):
    target = tmp_path / "run.ckpt"

    def peer_creates_before_the_exclusive_create(flags):
        if flags & os.O_EXCL:
            target.write_bytes(b"peer")
        return bool(flags & os.O_EXCL)

    calls = _peer_acts(monkeypatch, target, peer_creates_before_the_exclusive_create)
    assert check_destination(target, name="checkpoint") == target
    assert target.read_bytes() == b"peer"  # not truncated, not removed: it is not this process's probe
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]  # this process's folder probe is gone
    assert calls[0] & os.O_APPEND and calls[1] == "peer" and calls[2] & os.O_EXCL


def test_a_peer_s_probe_that_goes_leaves_no_file(tmp_path, monkeypatch):
    target = tmp_path / "run.ckpt"
    target.write_bytes(b"")  # the peer's probe, there when this process looks

    def peer_removes_its_probe_first(flags):
        acted = target.exists()
        target.unlink(missing_ok=True)
        return acted

    calls = _peer_acts(monkeypatch, target, peer_removes_its_probe_first)
    assert check_destination(target, name="checkpoint") == target
    assert not target.exists()  # this process made its own probe and removed it: nothing is left
    assert calls[0] == "peer" and not calls[1] & os.O_CREAT and calls[2] & os.O_EXCL


def _check_many(path, barrier, rounds, errors):
    for _ in range(rounds):
        barrier.wait()
        try:
            check_destination(path, name="checkpoint")
        except Exception as error:  # any failure is the finding
            errors.put(f"{type(error).__name__}: {error}")
        barrier.wait()


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork to start quickly")
def test_two_processes_check_one_missing_path_at_once(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier, errors, rounds = context.Barrier(2), context.Queue(), 300
    path = tmp_path / "run.ckpt"
    peers = [context.Process(target=_check_many, args=(path, barrier, rounds, errors)) for _ in range(2)]
    for peer in peers:
        peer.start()
    for peer in peers:
        peer.join(timeout=120)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert [peer.exitcode for peer in peers] == [0, 0]
    assert found == [] and list(tmp_path.iterdir()) == []
