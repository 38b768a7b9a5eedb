"""Models, one module per paper, each assembled from ``ref.nn`` and ``ref.mixers`` as forward/backward
pairs over a nested dict of parameters."""
