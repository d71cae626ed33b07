"""The benchmark's account of each thread's time on a core (`archiver.bench.clocks`): a thread that
computes is counted, one that waits is not, and what ran before the span is left out."""

from __future__ import annotations

import threading
import time

import pytest

from archiver.bench import clocks

pytestmark = pytest.mark.skipif(not clocks.available(), reason="threads' CPU time is read on Linux only")


def spin(seconds: float) -> None:
    """Run on a core for `seconds` of this thread's own CPU time, however busy the machine is."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def spin_then_stay(seconds: float) -> None:
    """Spin, then stay alive long enough to be read again: a thread's last reading is all that counts."""
    spin(seconds)
    time.sleep(3 * clocks.INTERVAL_S)


def test_a_thread_that_computes_is_counted_and_one_that_waits_is_not() -> None:
    with clocks.Measured() as measured:
        computing = threading.Thread(target=spin_then_stay, args=(0.3,), name="computing")
        waiting = threading.Thread(target=time.sleep, args=(0.3,), name="waiting")
        for thread in (computing, waiting):
            thread.start()
        for thread in (computing, waiting):
            thread.join()
    ran = measured.clocks.by_name()
    assert 0.29 <= ran["computing"] <= 0.45
    assert ran.get("waiting", 0.0) < 0.05
    assert measured.process_cpu_seconds >= ran["computing"]


def test_what_a_thread_ran_before_the_span_is_not_counted() -> None:
    spin(0.3)  # this thread, before the span
    with clocks.Measured() as measured:
        spin(0.05)
    ran = measured.clocks.by_name()[threading.current_thread().name]
    assert 0.04 <= ran < 0.2


def test_a_thread_that_is_gone_cannot_be_read() -> None:
    done = threading.Thread(target=lambda: None)
    done.start()
    done.join()
    assert done.native_id is not None
    time.sleep(0.05)
    assert clocks.cpu_seconds(done.native_id) is None or done.native_id in {
        t.native_id for t in threading.enumerate()
    }
    assert clocks.cpu_seconds(threading.get_native_id()) is not None
