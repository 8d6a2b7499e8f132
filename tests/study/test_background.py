"""Background work of a study (tpu_bo.study.background): asks while the chip trains, file writes."""

from __future__ import annotations

import threading
import time

import pytest

from tpu_bo.study.background import Prefetch, Writes


def test_prefetch_hands_back_what_it_asked_and_its_errors():
    counter = iter(range(100))
    prefetch = Prefetch(lambda: next(counter))
    assert prefetch.join() == []  # nothing started
    prefetch.start(0)
    assert not prefetch.running
    prefetch.start(3)
    with pytest.raises(RuntimeError, match="not joined"):
        prefetch.start(1)
    assert prefetch.join() == [0, 1, 2] and not prefetch.running

    def broken():
        raise ValueError("the sampler broke")

    failing = Prefetch(broken)
    failing.start(2)
    with pytest.raises(ValueError, match="the sampler broke"):
        failing.join()


def test_close_waits_for_asks_in_flight_and_ignores_their_outcome(caplog):
    release = threading.Event()

    def slow():
        release.wait(5)
        raise ValueError("late failure")

    prefetch = Prefetch(slow)
    prefetch.start(1)
    threading.Timer(0.2, release.set).start()
    started = time.perf_counter()
    prefetch.close()
    assert 0.1 < time.perf_counter() - started < 5 and not prefetch.running
    assert "did not finish cleanly: late failure" in caplog.text
    assert not [t for t in threading.enumerate() if t.name == "tpu_bo-ask"]


def test_writes_of_one_key_run_one_at_a_time_in_order():
    order, lock = [], threading.Lock()

    def write(tag, pause):
        def work():
            time.sleep(pause)
            with lock:
                order.append(tag)

        return work

    writes = Writes()
    writes.submit(1, write("1a", 0.2))
    writes.submit(2, write("2a", 0.0))
    writes.submit(1, write("1b", 0.0))  # waits for 1a first
    writes.close()
    assert order.index("1a") < order.index("1b") and sorted(order) == ["1a", "1b", "2a"]

    def broken():
        raise OSError("disk full")

    writes.submit(3, broken)
    with pytest.raises(OSError, match="disk full"):
        writes.wait(3)
    writes.submit(3, broken)
    writes.close(quiet=True)  # leaving anyway: logged, not raised
