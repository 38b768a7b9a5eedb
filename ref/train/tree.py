"""Trees: the nested dicts (and lists) of arrays that hold a model's parameters.

A model keeps its parameters in a *tree*::

    params = {"embed": W_e, "blocks": [{"W": W0, "b": b0}, {"W": W1, "b": b1}]}

A node is a ``dict`` (string keys) or a ``list``; anything else is a *leaf* (normally a numpy
array). Gradients come back shaped like ``params`` and optimizers map over both trees at once,
so everything here is about walking two trees in lockstep and saying clearly where they differ.

Paths. Every leaf has a path: the keys and list indices from the root joined by ``/``, e.g.
``"blocks/1/W"``. The root itself, when the tree is a bare array, has the path ``""``. Dict keys
must therefore be non-empty strings without ``/``.

Order. Leaves are visited with dict keys in *sorted* order and lists in index order, whatever
the insertion order of the dicts. Two trees with the same keys therefore give their leaves in
the same order (zipping ``tree_leaves(a)`` with ``tree_leaves(b)`` is safe), and a sum over the
leaves (a global gradient norm) is the same number, to the bit, for both.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from ref import checks

__all__ = [
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
]

SEP = "/"


def _show(path: str) -> str:
    """A path as it appears in messages: quoted, with the root spelled out."""
    return repr(path) if path else "the root"


def _join(path: str, key) -> str:
    return f"{path}{SEP}{key}" if path else str(key)


def _sorted_keys(node: dict, path: str) -> list[str]:
    for k in node:
        if not isinstance(k, str) or not k or SEP in k:
            raise ValueError(
                f"tree: expected dict keys that are non-empty strings without {SEP!r} "
                f"(they become paths), got key {k!r} at {_show(path)}"
            )
    return sorted(node)


def _describe(node) -> str:
    """A short description of a node, for messages."""
    if isinstance(node, dict):
        return f"a dict with keys {sorted(map(str, node))}"
    if isinstance(node, list):
        return f"a list of length {len(node)}"
    if isinstance(node, np.ndarray):
        return f"an array of shape {node.shape} and dtype {node.dtype}"
    return f"a leaf of type {type(node).__name__}"


def _walk(tree, path: str = "") -> Iterator[tuple[str, object]]:
    """Yield ``(path, leaf)`` for every leaf, in the canonical order (see the module docstring)."""
    if isinstance(tree, dict):
        for k in _sorted_keys(tree, path):
            yield from _walk(tree[k], _join(path, k))
    elif isinstance(tree, list):
        for i, child in enumerate(tree):
            yield from _walk(child, _join(path, i))
    else:
        yield path, tree


def tree_flatten(tree) -> dict[str, object]:
    """``{path: leaf}`` for every leaf, in the canonical order."""
    return dict(_walk(tree))


def tree_leaves(tree) -> list:
    """The leaves, in the canonical order."""
    return [leaf for _, leaf in _walk(tree)]


def tree_paths(tree) -> list[str]:
    """The paths of the leaves (``"blocks/0/W"``), in the canonical order."""
    return [path for path, _ in _walk(tree)]


def tree_structure(tree):
    """The shape of the tree without its leaves, as plain JSON-able data.

    A dict becomes a dict, a list a list, a leaf ``None``; e.g. ``{"blocks": [{"W": None}]}``.
    It records what the paths alone cannot: that ``blocks`` is a list (not a dict with key
    ``"0"``) and that a container is empty. ``tree_unflatten`` rebuilds a tree from it.
    """
    if isinstance(tree, dict):
        return {k: tree_structure(tree[k]) for k in _sorted_keys(tree, "")}
    if isinstance(tree, list):
        return [tree_structure(child) for child in tree]
    return None


def tree_unflatten(flat: dict[str, object], structure=None):
    """Rebuild a tree from ``{path: leaf}``; the inverse of :func:`tree_flatten`.

    With ``structure`` (from :func:`tree_structure`) the result has exactly that shape and
    ``flat`` must hold exactly its paths. Without it the shape is inferred from the paths: a node
    whose keys are exactly ``"0", "1", ..., "n-1"`` becomes a list, every other node a dict
    (empty containers cannot be inferred: they have no leaves).
    """
    if not isinstance(flat, dict):
        raise ValueError(f"flat: expected a dict {{path: leaf}}, got {type(flat).__name__}")
    if structure is not None:
        expected = [path for path, _ in _walk(structure)]
        missing = [p for p in expected if p not in flat]
        extra = [p for p in flat if p not in set(expected)]
        if missing or extra:
            raise ValueError(
                f"flat: expected exactly the paths of structure, missing {missing}, unexpected {extra}"
            )
        return _fill(structure, flat, "")
    if "" in flat:
        if len(flat) != 1:
            raise ValueError(f"flat: the root path '' (a bare leaf) cannot sit beside other paths, got {list(flat)}")
        return flat[""]
    root: dict = {}
    for path, leaf in flat.items():
        if not isinstance(path, str):
            raise ValueError(f"flat: expected string paths, got {path!r}")
        keys = path.split(SEP)
        if any(k == "" for k in keys):
            raise ValueError(f"flat: expected paths like 'blocks/0/W' without empty parts, got {path!r}")
        node = root
        for depth, k in enumerate(keys[:-1]):
            child = node.setdefault(k, {})
            if not isinstance(child, dict):
                raise ValueError(f"flat: path {path!r} goes through the leaf {SEP.join(keys[: depth + 1])!r}")
            node = child
        if keys[-1] in node:
            raise ValueError(f"flat: path {path!r} is both a leaf and a node")
        node[keys[-1]] = leaf
    return _lists_from_digit_keys(root)


def _fill(structure, flat, path):
    if isinstance(structure, dict):
        return {k: _fill(v, flat, _join(path, k)) for k, v in structure.items()}
    if isinstance(structure, list):
        return [_fill(v, flat, _join(path, i)) for i, v in enumerate(structure)]
    return flat[path]


def _lists_from_digit_keys(node):
    if not isinstance(node, dict):
        return node
    children = {k: _lists_from_digit_keys(v) for k, v in node.items()}
    if children and set(children) == {str(i) for i in range(len(children))}:
        return [children[str(i)] for i in range(len(children))]
    return children


def tree_map(fn: Callable, tree, *rest):
    """``fn`` applied leaf by leaf: ``tree_map(f, a, b)[path] == f(a[path], b[path])``.

    Every tree in ``rest`` must have the structure of ``tree`` (same dict keys, same list
    lengths); a ValueError names the first place where one does not. Leaves are not checked:
    ``fn`` sees whatever is there. The result keeps the dict insertion order of ``tree``.
    """
    for i, other in enumerate(rest, start=1):
        problem = _first_node_mismatch(tree, other, "")
        if problem:
            raise ValueError(f"trees[{i}]: expected the structure of trees[0]; {problem}")
    return _map(fn, tree, rest, "")


def _map(fn, tree, rest, path):
    if isinstance(tree, dict):
        _sorted_keys(tree, path)  # validates the keys
        return {k: _map(fn, tree[k], [r[k] for r in rest], _join(path, k)) for k in tree}
    if isinstance(tree, list):
        return [_map(fn, child, [r[i] for r in rest], _join(path, i)) for i, child in enumerate(tree)]
    return fn(tree, *rest)


def _first_node_mismatch(like, tree, path) -> str | None:
    """The first difference in containers only (leaves not compared), or None."""
    if isinstance(like, (dict, list)) or isinstance(tree, (dict, list)):
        problem = _container_problem(like, tree, path)
        if problem:
            return problem
        if isinstance(like, dict):
            for k in _sorted_keys(like, path):
                problem = _first_node_mismatch(like[k], tree[k], _join(path, k))
                if problem:
                    return problem
        else:
            for i, (a, b) in enumerate(zip(like, tree)):
                problem = _first_node_mismatch(a, b, _join(path, i))
                if problem:
                    return problem
    return None


def _container_problem(like, tree, path) -> str | None:
    """Compare two nodes, not their children: kind, dict keys, list length."""
    if isinstance(like, dict) and isinstance(tree, dict):
        missing = sorted(set(like) - set(tree), key=str)
        extra = sorted(set(tree) - set(like), key=str)
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(_show(_join(path, k)) for k in missing)}")
            if extra:
                parts.append(f"unexpected {', '.join(_show(_join(path, k)) for k in extra)}")
            return f"at {_show(path)}: " + "; ".join(parts)
        return None
    if isinstance(like, list) and isinstance(tree, list):
        if len(like) != len(tree):
            return f"at {_show(path)}: expected a list of length {len(like)}, got a list of length {len(tree)}"
        return None
    if isinstance(like, (dict, list)) or isinstance(tree, (dict, list)):
        return f"at {_show(path)}: expected {_describe(like)}, got {_describe(tree)}"
    return None


def tree_diff(tree, like) -> list[str]:
    """Every difference between ``tree`` and the template ``like``, one message per difference.

    Containers must match (kind, dict keys, list lengths) and every leaf of ``like`` that is an
    array must be matched by an array of the same shape and dtype. An empty list means "same".
    """
    diffs: list[str] = []
    _diff(tree, like, "", diffs)
    return diffs


def _diff(tree, like, path, diffs):
    problem = _container_problem(like, tree, path)
    if problem:
        diffs.append(problem)
    if isinstance(like, dict) and isinstance(tree, dict):
        for k in _sorted_keys(like, path):
            if k in tree:
                _diff(tree[k], like[k], _join(path, k), diffs)
    elif isinstance(like, list) and isinstance(tree, list):
        for i, (a, b) in enumerate(zip(tree, like)):
            _diff(a, b, _join(path, i), diffs)
    elif not problem and isinstance(like, np.ndarray):
        if not isinstance(tree, np.ndarray):
            diffs.append(f"at {_show(path)}: expected {_describe(like)}, got {_describe(tree)}")
        else:
            if tree.shape != like.shape:
                diffs.append(f"at {_show(path)}: expected shape {like.shape}, got {tree.shape}")
            if tree.dtype != like.dtype:
                diffs.append(f"at {_show(path)}: expected dtype {like.dtype}, got {tree.dtype}")


def check_same_structure(tree, like, name: str = "tree", like_name: str = "like"):
    """Raise ValueError unless ``tree`` matches ``like`` in structure, shapes and dtypes.

    The message names ``name``, the first differing path and what differs there, e.g.
    ``grads: expected the structure of params; at 'blocks/0/W': expected shape (4, 5), got (5, 4)``.
    Returns ``tree``.
    """
    diffs = tree_diff(tree, like)
    if diffs:
        more = f" (and {len(diffs) - 1} more difference{'s' if len(diffs) > 2 else ''})" if len(diffs) > 1 else ""
        raise ValueError(f"{name}: expected the structure of {like_name}; {diffs[0]}{more}")
    return tree


def check_float_tree(tree, name: str, finite: bool = False) -> dict[str, np.ndarray]:
    """Require every leaf to be a float32/float64 array (and finite, if asked).

    Errors name the leaf by its path under ``name``, e.g. ``grads/blocks/0/W: expected finite
    values, ...``. Returns the flat ``{path: array}``.
    """
    flat = tree_flatten(tree)
    for path, leaf in flat.items():
        where = _join(name, path) if path else name
        checks.float_array(leaf, where)
        if finite:
            checks.finite(leaf, where)
    return flat


def tree_zeros_like(tree):
    """A tree of zeros with the shapes and dtypes of ``tree``."""
    return tree_map(np.zeros_like, tree)
