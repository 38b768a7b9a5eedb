import os
import sys

if sys.argv[1:2] == ["bench"]:
    # read by OpenBLAS when NumPy loads it, so set before ref.cli imports NumPy (the value and the
    # reason: ref.bench.machine.OPENBLAS_THREAD_TIMEOUT, which tests/test_bench.py checks equal)
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "16")

from ref.cli import main  # noqa: E402

sys.exit(main())
