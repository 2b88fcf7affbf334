"""The compiler tests run their tiny networks on one thread: at these sizes threads only
add synchronisation (and on a busy machine, waiting). Thread-count independence is
tested on its own."""
import pytest

import cnnc


@pytest.fixture(autouse=True)
def one_thread():
    before = cnnc.get_num_threads()
    cnnc.set_num_threads(1)
    yield
    cnnc.set_num_threads(before)
