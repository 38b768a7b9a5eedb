"""Data for every lesson, shipped in the package: tokenizers, small corpora, synthetic tasks.

- ``tokenizers``: ``ByteTokenizer`` (vocab 256), ``CharTokenizer`` (vocabulary from a corpus).
- ``bpe``: ``train_bpe(text, vocab_size)`` -> ``BPETokenizer`` (byte-level; save/load as JSON).
- ``corpora``: ``load_text_corpus()`` (Shakespeare), ``load_code_corpus()`` (CPython stdlib),
  ``load_digits()`` (8x8 digits), ``train_val_split``, ``lm_batches``.
- ``synthetic``: ``get_task("copying" | "selective_copying" | "mqar" | "induction_heads", **config)
  .sample(rng, B)``, and the continuous ``DelayedCopy``.
- ``rnn_tasks`` (the adding problem, a label from the future), ``pointer_tasks`` (sorting and
  planar convex hull), ``moving_square`` (a bouncing square, next-frame prediction) and
  ``icl_regression`` (in-context linear regression prompts and the reference learners: OLS, ridge,
  GD, the Bayes posterior mean), imported from their modules; likewise, one per lesson:
  ``span_corruption`` (CodeGen2's sentinel spans, mixture and prefix-LM batches, infilling),
  ``language_conditions`` (sentences, word lists, Jabberwocky, non-words), ``laundry_list``,
  ``ordinal_sequences`` (numbers, days, months, letters), ``regbench`` (random DFAs, the in-context
  n-gram estimator), ``probabilistic_fsm``, ``verbatim_lists`` (noun lists that recur),
  ``moving_dot_videos`` and ``markov_sources`` (topic Markov chains with their exact Bayes loss).

Nothing is downloaded: the files are in ``ref/tasks/data/`` (origins, licenses, sha256 in
``data/SOURCES.md``).
"""

from ref.tasks.bpe import BPETokenizer, train_bpe
from ref.tasks.corpora import (
    DIGITS_CLASS_COUNTS,
    code_corpus_files,
    data_files,
    lm_batches,
    load_code_corpus,
    load_digits,
    load_text_corpus,
    train_val_split,
)
from ref.tasks.synthetic import MQAR, TASKS, Batch, Copying, SelectiveCopying, SyntheticTask, get_task, register_task
from ref.tasks.tokenizers import ByteTokenizer, CharTokenizer, Tokenizer

__all__ = [
    "Tokenizer",
    "ByteTokenizer",
    "CharTokenizer",
    "BPETokenizer",
    "train_bpe",
    "load_text_corpus",
    "load_code_corpus",
    "code_corpus_files",
    "load_digits",
    "DIGITS_CLASS_COUNTS",
    "data_files",
    "train_val_split",
    "lm_batches",
    "Batch",
    "SyntheticTask",
    "Copying",
    "SelectiveCopying",
    "MQAR",
    "TASKS",
    "get_task",
    "register_task",
]
