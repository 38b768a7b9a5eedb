"""Long checks that run in subprocesses of their own, started beside the in-process tests.

The main pytest process keeps about one core busy; CI has two. The checks that must run in a
process of their own (the CUDA-simulator suite, every lesson in quick mode) therefore start as soon
as collection ends, on a small pool of threads that each wait on a subprocess, and the tests that
report them only wait for their results. Nothing else changes: each check still passes or fails in
its own test, with its own output.

A test module takes part by defining ``background_jobs(items) -> {key: function}``, given the
module's selected test items; ``tests/conftest.py`` submits the jobs (only those of selected tests),
and a test reads its job's return value with ``result(key)``. A job that was never submitted (the
module was collected some other way) runs in the test itself.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from threading import Lock


def workers(in_process_tests: bool) -> int:
    """Threads for the jobs: every core but the one the in-process tests keep busy."""
    cores = os.cpu_count() or 2
    return max(1, cores - 1) if in_process_tests else cores


class Background:
    """A pool of jobs, each a function that usually waits on subprocesses started with ``run``."""

    def __init__(self):
        self.pool: ThreadPoolExecutor | None = None
        self.futures: dict[str, Future] = {}
        self.procs: set[subprocess.Popen] = set()
        self.lock = Lock()  # orders ``run``'s start of a subprocess against ``stop``
        self.stopped = False

    def start(self, jobs: dict, threads: int) -> None:
        """Submit every job, in the given order (put the longest first)."""
        if not jobs:
            return
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="background")
        for key, fn in jobs.items():
            self.futures[key] = self.pool.submit(fn)

    def result(self, key: str, fn=None):
        """The job's return value (re-raising what it raised); runs ``fn`` here if it was never submitted."""
        if key in self.futures:
            return self.futures[key].result()
        if fn is None:
            raise KeyError(f"background job {key!r} was not submitted and no function was given")
        return fn()

    def run(self, cmd, timeout: float, **kwargs) -> subprocess.CompletedProcess:
        """``subprocess.run`` with text output captured; killed after ``timeout`` seconds or by ``stop``."""
        with self.lock:
            if self.stopped:
                raise RuntimeError("background jobs were stopped: the session is ending")
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
            self.procs.add(proc)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            stderr += f"\n[killed after {timeout} s]"
        finally:
            self.procs.discard(proc)
        return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)

    def stop(self) -> None:
        """Cancel the jobs not yet started and kill the subprocesses still running."""
        with self.lock:
            self.stopped = True
            if self.pool is not None:
                self.pool.shutdown(wait=False, cancel_futures=True)
                self.pool = None
            for proc in list(self.procs):
                proc.kill()
        self.futures.clear()


SESSION = Background()  # the test session's jobs: started and stopped by tests/conftest.py
start, result, run, stop = SESSION.start, SESSION.result, SESSION.run, SESSION.stop
