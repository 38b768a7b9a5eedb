"""The Pointer Networks tasks (ref.tasks.pointer_tasks): the monotone-chain hull against a brute-force
definition, the canonical start and orientation, sorting targets, the metrics, bad input."""

import itertools

import numpy as np
import pytest

from ref.tasks.pointer_tasks import (
    IGNORE,
    convex_hull,
    hull_area_coverage,
    is_simple_polygon,
    pad_pointers,
    pointer_accuracy,
    polygon_area,
    sample_convex_hull,
    sample_sorting,
    sequence_accuracy,
)

pytestmark = pytest.mark.attention


def brute_force_hull_vertices(P):
    """A point is a vertex iff some line through it has every other point strictly on one side:
    equivalently, i is a vertex iff it lies on no segment/triangle of the others. Here: the edge
    definition, (i, j) is a hull edge iff every other point is strictly left of i -> j."""
    n = len(P)
    edges = {}
    for i, j in itertools.permutations(range(n), 2):
        cr = [(P[j, 0] - P[i, 0]) * (P[k, 1] - P[i, 1]) - (P[j, 1] - P[i, 1]) * (P[k, 0] - P[i, 0])
              for k in range(n) if k not in (i, j)]
        if all(c > 0 for c in cr):
            edges[i] = j
    return edges  # vertex -> next vertex counter-clockwise


@pytest.mark.parametrize("n", [3, 4, 5, 8, 10, 15])
def test_hull_matches_the_definition(rng, n):
    for _ in range(20):
        P = rng.random((n, 2))
        hull = convex_hull(P)
        edges = brute_force_hull_vertices(P)
        assert set(hull) == set(edges)
        for a, b in zip(hull, hull[1:] + hull[:1]):  # counter-clockwise: consecutive = an edge
            assert edges[a] == b
        assert hull[0] == min(range(n), key=lambda i: (P[i, 0], P[i, 1]))  # canonical start: leftmost


def test_hull_square_with_interior_and_collinear_points():
    P = np.array([[0.5, 0.5], [1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.0]])
    assert convex_hull(P) == [2, 1, 4, 3]  # (0,0) (1,0) (1,1) (0,1); (0.5, 0) is collinear, not a vertex
    assert convex_hull(np.array([[0.0, 0.0], [0.0, 0.0]])) == [0]


def test_hull_is_permutation_equivariant(rng):
    P = rng.random((9, 2))
    perm = rng.permutation(9)
    hull = convex_hull(P)
    assert [perm[i] for i in convex_hull(P[perm])] == hull


def test_sample_tasks(rng):
    x, t = sample_sorting(rng, 4, 6)
    assert x.shape == (4, 6, 1) and t.shape == (4, 7)
    for b in range(4):
        np.testing.assert_array_equal(np.sort(x[b, :, 0]), x[b, t[b, :6] - 1, 0])
        assert t[b, 6] == 0
    x, t = sample_convex_hull(rng, 5, 7)
    assert x.shape == (5, 7, 2) and t.shape == (5, 8)
    for b in range(5):
        h = convex_hull(x[b])
        np.testing.assert_array_equal(t[b, : len(h)], np.array(h) + 1)
        assert t[b, len(h)] == 0 and np.all(t[b, len(h) + 1 :] == IGNORE)
    x2, t2 = sample_convex_hull(np.random.default_rng(3), 5, 7)
    x3, t3 = sample_convex_hull(np.random.default_rng(3), 5, 7)
    np.testing.assert_array_equal(x2, x3)
    np.testing.assert_array_equal(t2, t3)


def test_metrics():
    targets = pad_pointers([[0, 1, 2], [2, 1]])  # 1-based + END
    np.testing.assert_array_equal(targets, [[1, 2, 3, 0], [3, 2, 0, IGNORE]])
    pred = np.array([[1, 2, 3, 0], [3, 1, 0, IGNORE]])
    assert sequence_accuracy(pred, targets) == 0.5
    assert pointer_accuracy(pred, targets) == 4 / 5
    assert sequence_accuracy(pred[:, :3], targets) == 0.0  # a missing END is wrong
    assert polygon_area(np.array([[0, 0], [2, 0], [2, 1], [0, 1]], float)) == 2.0


def test_area_coverage():
    P = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, 0.5]])
    assert hull_area_coverage(P, [1, 2, 3, 4, 0]) == 1.0
    assert hull_area_coverage(P, [1, 2, 3, 0]) == 0.5  # a triangle: half the square
    assert hull_area_coverage(P, [1, 2, 5, 3, 4, 0]) == pytest.approx(0.75)  # a dent to the centre
    assert np.isnan(hull_area_coverage(P, [1, 3, 2, 4, 0]))  # a bow tie crosses itself
    assert np.isnan(hull_area_coverage(P, [1, 2, 0]))  # two vertices
    assert np.isnan(hull_area_coverage(P, [1, 2, 2, 3, 0]))  # a repeated vertex
    assert np.isnan(hull_area_coverage(P, [1, 2, 9, 0]))  # no such point
    assert is_simple_polygon(P[[0, 1, 2, 3]]) and not is_simple_polygon(P[[0, 2, 1, 3]])


def test_bad_input(rng):
    with pytest.raises(ValueError, match="points: expected shape"):
        convex_hull(rng.random((4, 3)))
    with pytest.raises(ValueError, match="points: expected finite"):
        convex_hull(np.array([[0.0, np.nan], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="n: expected an integer"):
        sample_sorting(rng, 2, 0)
    with pytest.raises(ValueError, match="rng"):
        sample_convex_hull(0, 2, 5)
    with pytest.raises(ValueError, match="length"):
        pad_pointers([[0, 1, 2]], 3)
