"""Training: parameter trees, optimizers, learning-rate schedule, clipping, the loop, checkpoints.

Parameters are nested dicts (and lists) of numpy arrays, "trees"; gradients come back shaped like
them. Everything here is a pure function over trees::

    opt = get_optimizer("adamw", weight_decay=0.1)
    params, opt_state, history = train(params, loss_and_grads, batches, steps=1000, rng=rng,
                                       optimizer=opt, lr=3e-4, warmup_steps=100, clip_norm=1.0)

Modules: ``tree`` (map/flatten/compare trees), ``optim`` (SGD, Adam, AdamW), ``schedule``
(warmup + cosine), ``clip`` (global-norm clipping), ``loop`` (``train``), ``checkpoint``
(atomic ``.npz`` checkpoints, loaded all-or-nothing).
"""

from ref.train.checkpoint import FORMAT_VERSION, Checkpoint, load_checkpoint, save_checkpoint
from ref.train.clip import clip_grad_norm, global_norm
from ref.train.loop import TrainResult, restore_rng, train
from ref.train.optim import (
    OPTIMIZERS,
    Optimizer,
    adam_init,
    adam_step,
    adamw_init,
    adamw_step,
    get_optimizer,
    sgd_init,
    sgd_step,
)
from ref.train.schedule import lr_at
from ref.train.tree import (
    check_float_tree,
    check_same_structure,
    tree_diff,
    tree_flatten,
    tree_leaves,
    tree_map,
    tree_paths,
    tree_structure,
    tree_unflatten,
    tree_zeros_like,
)

__all__ = [
    # tree
    "tree_map",
    "tree_leaves",
    "tree_paths",
    "tree_flatten",
    "tree_unflatten",
    "tree_structure",
    "tree_zeros_like",
    "tree_diff",
    "check_same_structure",
    "check_float_tree",
    # optim
    "sgd_init",
    "sgd_step",
    "adam_init",
    "adam_step",
    "adamw_init",
    "adamw_step",
    "Optimizer",
    "OPTIMIZERS",
    "get_optimizer",
    # schedule, clip
    "lr_at",
    "global_norm",
    "clip_grad_norm",
    # loop
    "train",
    "TrainResult",
    "restore_rng",
    # checkpoint
    "save_checkpoint",
    "load_checkpoint",
    "Checkpoint",
    "FORMAT_VERSION",
]
