import os
import subprocess
import sys

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
