import numpy as np
import pytest

from ref.nn import embedding, embedding_backward, gradcheck


def test_embedding_forward_is_a_row_lookup(rng):
    table = rng.standard_normal((7, 3))
    ids = rng.integers(0, 7, size=(2, 5))
    y, _ = embedding(ids, table)
    expected = np.array([[[table[ids[b, t], d] for d in range(3)] for t in range(5)] for b in range(2)])
    np.testing.assert_array_equal(y, expected)


def test_embedding_gradcheck_with_repeated_ids(rng):
    ids = np.array([[1, 3, 1], [1, 0, 3]])  # 1 three times, 3 twice, 2 and 4 never
    table = rng.standard_normal((5, 4))
    gradcheck(embedding, embedding_backward, {"ids": ids, "table": table}, rng=rng)


def test_embedding_backward_adds_up_repeated_ids(rng):
    ids = np.array([2, 2, 2, 0])
    table = rng.standard_normal((4, 3))
    dy = rng.standard_normal((4, 3))
    _, cache = embedding(ids, table)
    dids, dtable = embedding_backward(dy, cache)
    assert dids is None
    expected = np.zeros((4, 3))
    expected[2] = dy[0] + dy[1] + dy[2]  # a plain dtable[ids] += dy would keep only one of them
    expected[0] = dy[3]
    np.testing.assert_allclose(dtable, expected, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize(
    "ids, table, match",
    [
        (np.array([0.0, 1.0]), np.zeros((3, 2)), "ids: expected an integer dtype, got float64"),
        (np.array([True, False]), np.zeros((3, 2)), "ids: expected an integer dtype, got bool"),
        ([0, 1], np.zeros((3, 2)), "ids: expected a numpy array of integers, got list"),
        (np.array([[0, 3]]), np.zeros((3, 2)), r"ids: expected values in \[0, V\) = \[0, 3\) .* got 3 at "
         r"index \(0, 1\)"),
        (np.array([-1, 0]), np.zeros((3, 2)), r"ids: expected values in \[0, V\) = \[0, 3\) .* got -1 at index \(0,\)"),
        (np.array([0, 1]), np.zeros((3, 2), dtype=int), "table: expected dtype float32 or float64, got int64"),
        (np.array([0, 1]), np.zeros(3), r"table: expected 2 axes \(V, D\)"),
    ],
)
def test_embedding_bad_input(ids, table, match):
    with pytest.raises(ValueError, match=match):
        embedding(ids, table)


def test_embedding_backward_refuses_a_wrong_dy(rng):
    _, cache = embedding(np.array([0, 1]), rng.standard_normal((3, 2)))
    with pytest.raises(ValueError, match=r"dy: expected shape \(\.\.\., D\) = \(2, 2\)"):
        embedding_backward(np.zeros((2, 3)), cache)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("D", [1, 31, 32, 33, 70, 128])
@pytest.mark.parametrize("ids_dtype", [np.int64, np.int32, np.uint8])
def test_numba_backward_gives_numpys_bits(rng, dtype, D, ids_dtype):
    """The scatter-add adds each entry's terms in position order, as np.add.at does: equal bits.
    D covers one column block, a partial one and several; ids repeat (40 positions, 6 rows)."""
    ids = rng.integers(0, 6, size=(5, 8)).astype(ids_dtype)
    table = rng.standard_normal((6, D)).astype(dtype)
    dy = rng.standard_normal((5, 8, D)).astype(dtype)
    y, cache = embedding(ids, table, backend="numba")
    _, want = embedding_backward(dy, embedding(ids, table)[1])
    _, got = embedding_backward(dy, cache)
    np.testing.assert_array_equal(y, table[ids])
    assert got.dtype == dtype and got.shape == table.shape
    np.testing.assert_array_equal(got, want)
    # a non-contiguous dy, and no positions at all
    dy_t = np.ascontiguousarray(dy.transpose(1, 0, 2)).transpose(1, 0, 2)
    np.testing.assert_array_equal(embedding_backward(dy_t, cache)[1], want)
    _, c0 = embedding(ids[:0], table, backend="numba")
    np.testing.assert_array_equal(embedding_backward(dy[:0], c0)[1], np.zeros_like(table))


def test_numba_backward_gradcheck(rng):
    ids = np.array([[1, 3, 1], [1, 0, 3]])
    table = rng.standard_normal((5, 40))
    gradcheck(embedding, embedding_backward, {"ids": ids, "table": table, "backend": "numba"}, rng=rng)


def test_embedding_bad_backend():
    with pytest.raises(ValueError, match="backend: embedding supports 'numpy', 'numba', got 'cuda'"):
        embedding(np.array([0]), np.zeros((2, 2)), backend="cuda")
