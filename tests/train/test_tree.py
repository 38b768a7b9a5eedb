import numpy as np
import pytest

from ref.train import (
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


def make_tree(rng):
    return {
        "emb": rng.standard_normal((5, 3)),
        "blocks": [
            {"W": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)},
            {"W": rng.standard_normal((4, 3)), "b": rng.standard_normal(3).astype(np.float32)},
        ],
    }


def test_paths_and_leaves_in_sorted_key_order(rng):
    tree = make_tree(rng)
    assert tree_paths(tree) == ["blocks/0/W", "blocks/0/b", "blocks/1/W", "blocks/1/b", "emb"]
    assert tree_leaves(tree)[0] is tree["blocks"][0]["W"]
    assert tree_leaves(tree)[-1] is tree["emb"]
    # the insertion order of a dict does not change the order of the leaves
    shuffled = {"blocks": tree["blocks"], "emb": tree["emb"]}
    assert tree_paths(shuffled) == tree_paths(tree)
    assert all(a is b for a, b in zip(tree_leaves(shuffled), tree_leaves(tree)))


def test_bare_array_is_a_tree_with_root_path():
    x = np.zeros(3)
    assert tree_flatten(x) == {"": x}
    assert tree_unflatten({"": x}) is x
    assert tree_map(lambda a: a + 1, x).tolist() == [1.0, 1.0, 1.0]


def test_flatten_unflatten_round_trip(rng):
    tree = make_tree(rng)
    flat = tree_flatten(tree)
    assert list(flat) == tree_paths(tree)
    for inferred in (tree_unflatten(flat), tree_unflatten(flat, tree_structure(tree))):
        assert isinstance(inferred["blocks"], list) and len(inferred["blocks"]) == 2
        assert tree_flatten(inferred).keys() == flat.keys()
        assert all(inferred_leaf is leaf for inferred_leaf, leaf in zip(tree_leaves(inferred), tree_leaves(tree)))


def test_structure_keeps_what_paths_cannot(rng):
    """A dict with digit keys stays a dict, and empty containers survive, given the structure."""
    tree = {"by_name": {"0": np.ones(1), "1": np.ones(2)}, "empty_list": [], "empty_dict": {}, "x": np.ones(3)}
    structure = tree_structure(tree)
    assert structure == {"by_name": {"0": None, "1": None}, "empty_dict": {}, "empty_list": [], "x": None}
    rebuilt = tree_unflatten(tree_flatten(tree), structure)
    assert isinstance(rebuilt["by_name"], dict) and rebuilt["empty_list"] == [] and rebuilt["empty_dict"] == {}
    # without the structure, digit keys 0..n-1 are read as a list
    assert isinstance(tree_unflatten(tree_flatten(tree))["by_name"], list)


def test_unflatten_refuses_bad_paths():
    with pytest.raises(ValueError, match=r"flat: expected exactly the paths of structure, missing \['b'\]"):
        tree_unflatten({"a": 1}, {"a": None, "b": None})
    with pytest.raises(ValueError, match=r"unexpected \['c'\]"):
        tree_unflatten({"a": 1, "c": 2}, {"a": None})
    with pytest.raises(ValueError, match="without empty parts"):
        tree_unflatten({"a//b": 1})
    with pytest.raises(ValueError, match="goes through the leaf 'a'"):
        tree_unflatten({"a": 1, "a/b": 2})


def test_tree_map_many_trees(rng):
    a, b = make_tree(rng), make_tree(rng)
    out = tree_map(lambda x, y: x - y, a, b)
    for path, leaf in tree_flatten(out).items():
        np.testing.assert_array_equal(leaf, tree_flatten(a)[path] - tree_flatten(b)[path])
    # keys in another insertion order still pair up by name
    b_reordered = {"emb": b["emb"], "blocks": b["blocks"]}
    np.testing.assert_array_equal(tree_map(lambda x, y: x - y, a, b_reordered)["emb"], a["emb"] - b["emb"])
    assert list(out) == list(a)  # the result keeps the first tree's insertion order


@pytest.mark.parametrize(
    "other, match",
    [
        ({"emb": 0, "blocks": [{"W": 0, "b": 0}]}, r"trees\[1\]: .* at 'blocks': expected a list of length 2, got a list of length 1"),
        ({"emb": 0, "blocks": [{"W": 0}, {"W": 0, "b": 0}]}, r"at 'blocks/0': missing 'blocks/0/b'"),
        ({"emb": 0, "blocks": [{"W": 0, "b": 0}, {"W": 0, "b": 0}], "x": 0}, r"at the root: unexpected 'x'"),
        ({"emb": {"a": 0}, "blocks": [{"W": 0, "b": 0}, {"W": 0, "b": 0}]}, r"at 'emb': expected an array .*, got a dict"),
    ],
)
def test_tree_map_names_the_first_structure_difference(rng, other, match):
    with pytest.raises(ValueError, match=match):
        tree_map(lambda x, y: x, make_tree(rng), other)


@pytest.mark.parametrize("bad_key", ["a/b", "", 3])
def test_dict_keys_must_be_plain_strings(bad_key):
    with pytest.raises(ValueError, match="tree: expected dict keys that are non-empty strings without '/'"):
        tree_paths({"ok": {bad_key: np.zeros(1)}})


def test_zeros_like_keeps_shapes_and_dtypes(rng):
    tree = make_tree(rng)
    zeros = tree_zeros_like(tree)
    for z, x in zip(tree_leaves(zeros), tree_leaves(tree)):
        assert z.shape == x.shape and z.dtype == x.dtype and not z.any()


def test_check_same_structure_names_first_path_shape_dtype(rng):
    like = make_tree(rng)
    check_same_structure(make_tree(rng), like)  # same shapes and dtypes: fine

    wrong_shape = make_tree(rng)
    wrong_shape["blocks"][1]["W"] = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"^grads: expected the structure of params; at 'blocks/1/W': expected shape \(4, 3\), got \(3, 4\)$"):
        check_same_structure(wrong_shape, like, "grads", "params")

    wrong_dtype = make_tree(rng)
    wrong_dtype["blocks"][1]["b"] = wrong_dtype["blocks"][1]["b"].astype(np.float64)
    with pytest.raises(ValueError, match=r"at 'blocks/1/b': expected dtype float32, got float64"):
        check_same_structure(wrong_dtype, like, "grads", "params")

    several = make_tree(rng)
    several["emb"] = np.zeros(2)
    del several["blocks"][0]["b"]
    with pytest.raises(ValueError, match=r"at 'blocks/0': missing 'blocks/0/b' \(and 1 more difference\)"):
        check_same_structure(several, like)


def test_tree_diff_lists_every_difference(rng):
    like = make_tree(rng)
    tree = make_tree(rng)
    tree["emb"] = tree["emb"].astype(np.float32)[:2]
    tree["blocks"].append({"W": np.zeros(1), "b": np.zeros(1)})
    tree["extra"] = np.zeros(1)
    diffs = tree_diff(tree, like)
    assert diffs == [
        "at the root: unexpected 'extra'",
        "at 'blocks': expected a list of length 2, got a list of length 3",
        "at 'emb': expected shape (5, 3), got (2, 3)",
        "at 'emb': expected dtype float64, got float32",
    ]
    assert tree_diff(like, like) == []


def test_check_float_tree(rng):
    tree = make_tree(rng)
    assert list(check_float_tree(tree, "params")) == tree_paths(tree)
    tree["blocks"][0]["b"] = np.arange(4)
    with pytest.raises(ValueError, match="params/blocks/0/b: expected dtype float32 or float64, got int64"):
        check_float_tree(tree, "params")
    tree["blocks"][0]["b"] = None
    with pytest.raises(ValueError, match="params/blocks/0/b: expected a numpy array .* got NoneType"):
        check_float_tree(tree, "params")
    tree["blocks"][0]["b"] = np.array([1.0, np.nan])
    check_float_tree(tree, "grads")
    with pytest.raises(ValueError, match=r"grads/blocks/0/b: expected finite values, got 1 non-finite \(first at index \(1,\)"):
        check_float_tree(tree, "grads", finite=True)
