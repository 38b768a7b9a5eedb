"""Sequence mixers, every form of each, one sub-package per mixer.

Each mixer offers the forms its paper describes with one signature per form
(``<mixer>_recurrent``, ``<mixer>_parallel``, ``<mixer>_chunked(..., chunk_size)``), each with its
``_backward``; the tests prove all forms equal, forward and backward.
"""
