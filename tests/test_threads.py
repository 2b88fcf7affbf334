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
