"""The pool that runs the subprocess checks beside the in-process tests (tests/background.py)."""

import sys
import time

import pytest

from tests.background import Background, workers

PY = sys.executable


def test_run_captures_output_and_exit_status():
    bg = Background()
    proc = bg.run([PY, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"], timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "out\n", "err\n")
    assert not bg.procs


def test_run_kills_a_process_past_its_timeout():
    start = time.perf_counter()
    proc = Background().run([PY, "-c", "import time; time.sleep(60)"], timeout=0.5)
    assert proc.returncode != 0 and "[killed after 0.5 s]" in proc.stderr
    assert time.perf_counter() - start < 30


def test_jobs_return_their_results_and_errors():
    bg = Background()

    def fails():
        raise ZeroDivisionError("job failed")

    bg.start({"a": lambda: 1, "b": fails}, threads=2)
    try:
        assert bg.result("a") == 1
        with pytest.raises(ZeroDivisionError, match="job failed"):
            bg.result("b")
        assert bg.result("never submitted", lambda: 2) == 2  # runs here
        with pytest.raises(KeyError, match="'c' was not submitted"):
            bg.result("c")
    finally:
        bg.stop()


def test_stop_kills_running_subprocesses_and_cancels_the_rest():
    bg = Background()
    bg.start({key: (lambda: bg.run([PY, "-c", "import time; time.sleep(60)"], timeout=120)) for key in "xy"},
             threads=1)
    deadline = time.perf_counter() + 30
    while not bg.procs and time.perf_counter() < deadline:  # wait until x's subprocess runs
        time.sleep(0.01)
    x, y = bg.futures["x"], bg.futures["y"]
    start = time.perf_counter()
    bg.stop()
    assert x.result(timeout=30).returncode != 0  # killed, not slept out
    assert y.cancelled()
    assert time.perf_counter() - start < 30
    with pytest.raises(RuntimeError, match="stopped"):
        bg.run([PY, "-c", "pass"], timeout=10)


def test_workers_leave_a_core_to_the_in_process_tests():
    assert workers(in_process_tests=False) >= workers(in_process_tests=True) >= 1
