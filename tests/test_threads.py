import os
import subprocess
import sys

import numpy as np
import pytest

import cnnc
from cnnc import threads


def test_default_is_positive():
    assert cnnc.get_num_threads() >= 1


def test_set_and_restore(monkeypatch):
    monkeypatch.setattr(threads, "_chosen", None)
    cnnc.set_num_threads(1)
    assert cnnc.get_num_threads() == 1


def test_zero_rejected():
    with pytest.raises(ValueError):
        cnnc.set_num_threads(0)


def test_env_respected(monkeypatch):
    monkeypatch.setattr(threads, "_chosen", None)
    monkeypatch.setenv("CNNC_NUM_THREADS", "1")
    threads._from_env.cache_clear()  # the environment is read once per process
    if threads._threads.openmp_enabled():
        assert cnnc.get_num_threads() == 1
    monkeypatch.undo()
    threads._from_env.cache_clear()


def test_core_round_trip_is_a_time_or_inf():
    from cnnc._kernels.threads import core_round_trip_ns
    ns = core_round_trip_ns(2000, 0.5)
    assert ns > 0  # inf when the other core is busy
    for bad in ((0, 0.1), (10, 0.0)):
        with pytest.raises(ValueError):
            core_round_trip_ns(*bad)


def test_core_speeds_are_times():
    from cnnc._kernels.threads import core_speeds
    solo, mine, theirs = core_speeds(20000, 0.5)
    assert solo > 0 and mine > 0 and theirs > 0  # inf when no core was free
    for bad in ((0, 0.1), (10, 0.0)):
        with pytest.raises(ValueError):
            core_speeds(*bad)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_core_round_trip_without_a_second_core_gives_up_in_time():
    """Both threads on one CPU: the trips cannot keep up; the probe stops at its limit."""
    code = ("import os, time; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from cnnc._kernels.threads import core_round_trip_ns as f; t = time.time(); "
            "ns = f(100000, 0.05); print(ns, time.time() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out[0] == "inf"
    assert float(out[1]) < 5


@pytest.mark.parametrize("threads", [1, 2, 3, 5])
@pytest.mark.parametrize("items", [0, 1, 2, 7, 64, 1001])
def test_work_queue_runs_every_item_once(threads, items):
    """Whatever the shares (fewer or more than the threads), each item runs exactly once."""
    from cnnc._kernels.threads import work_share_order
    for shares in {1, threads, threads + 2, 70}:
        order = work_share_order(items, threads, shares)
        done = np.sort(order[order >= 0])
        np.testing.assert_array_equal(done, np.arange(items))


@pytest.mark.skipif(not cnnc.threads._threads.openmp_enabled(), reason="built without OpenMP")
def test_work_queue_takes_over_a_slow_threads_share():
    """A thread takes its own share from the front, in order; a slowed thread's share is
    taken by the other from the back."""
    from cnnc._kernels.threads import work_share_order
    order = work_share_order(40, 2, 2, slow=1, slow_us=3000)
    for row, own in zip(order, (range(20), range(20, 40))):
        taken = row[row >= 0]
        mine = taken[np.isin(taken, own)]
        np.testing.assert_array_equal(mine, np.sort(mine))  # own items in order
        stolen = taken[~np.isin(taken, own)]
        np.testing.assert_array_equal(stolen, np.sort(stolen)[::-1])  # from the back
    assert (order[1] >= 0).sum() < 20 < (order[0] >= 0).sum()
    with pytest.raises(ValueError):
        work_share_order(-1, 2, 2)
