"""ref: a readable NumPy reference of recent sequence models.

Sub-packages: ``ref.nn`` (building blocks with hand-written backward), ``ref.mixers`` (sequence
mixers, every form of each), ``ref.models`` (one module per paper), ``ref.tasks`` (data),
``ref.train`` (optimizers, schedules, training loop, checkpoints). ``python -m ref`` is the CLI.

Dimension letters used everywhere: B batch, T time, H heads, K key dim, V value dim,
D model/channel dim, N state dim.
"""

__version__ = "0.1.0"
