"""The Pointer Networks tasks (Vinyals et al., arXiv 1506.03134): sorting and the planar convex hull,
their exact answers, and the paper's metrics.

An answer is a sequence of pointers in the convention of ``ref.models.pointer_net``: 1-based indices
of input elements (1..n), then 0 = END, padded with ``IGNORE = -100`` to a common length.

* Sorting: x (B, n, 1) uniform in [0, 1); the answer is the indices in increasing order of value.
* Convex hull: x (B, n, 2) uniform in the unit square (the paper's data, Sec. 4.2); the answer is the
  hull's vertices counter-clockwise, starting at a canonical vertex: the leftmost point (lowest x,
  then lowest y). A cycle has n_hull starting points; fixing one makes the answer a function of the
  point *set*, so shuffling the input permutes the pointers and nothing else. The hull is computed
  exactly by Andrew's monotone chain (sort by (x, y); build the lower and upper chains, popping while
  the last turn is not strictly counter-clockwise), which starts at that very point.

Metrics (Sec. 4.2): ``sequence_accuracy`` (the whole answer exact), ``pointer_accuracy`` (per
position, END excluded), and for the hull ``hull_area_coverage``: the area of the predicted polygon
over the true hull's area, for a prediction that is a valid (simple, >= 3 distinct vertices)
polygon; the paper reports "FAIL" where more than 1% of predictions are not.
"""

from __future__ import annotations

import numpy as np

from ref import checks

__all__ = ["IGNORE", "convex_hull", "sample_sorting", "sample_convex_hull", "pad_pointers", "polygon_area",
           "is_simple_polygon", "hull_area_coverage", "sequence_accuracy", "pointer_accuracy"]

IGNORE = -100


def _rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _cross(o, a, b) -> float:
    """z of (a - o) x (b - o): > 0 when o -> a -> b turns counter-clockwise."""
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def convex_hull(points: np.ndarray) -> list[int]:
    """0-based indices of the hull's vertices, counter-clockwise from the leftmost (then lowest)
    point; collinear boundary points are not vertices. Andrew's monotone chain, O(n log n)."""
    points = checks.float_array(points, "points", ndim=2, dims="(n, 2)")
    if points.shape[1] != 2 or points.shape[0] < 1:
        raise ValueError(f"points: expected shape (n, 2) with n >= 1, got {points.shape}")
    checks.finite(points, "points")
    pts = [tuple(p) for p in points.tolist()]  # Python floats: the loops below are scalar work
    order = sorted(range(len(pts)), key=lambda i: (pts[i], i))
    # drop exact duplicates (they are the same vertex)
    uniq = [i for k, i in enumerate(order) if k == 0 or pts[i] != pts[order[k - 1]]]
    if len(uniq) <= 2:
        return uniq
    lower, upper = [], []
    for i in uniq:  # left to right: the lower chain
        while len(lower) >= 2 and _cross(pts[lower[-2]], pts[lower[-1]], pts[i]) <= 0:
            lower.pop()
        lower.append(i)
    for i in reversed(uniq):  # right to left: the upper chain
        while len(upper) >= 2 and _cross(pts[upper[-2]], pts[upper[-1]], pts[i]) <= 0:
            upper.pop()
        upper.append(i)
    return lower[:-1] + upper[:-1]  # each chain's last point is the other's first


def pad_pointers(seqs: list[list[int]], length: int | None = None) -> np.ndarray:
    """1-based pointer sequences, each followed by END (0), padded with IGNORE: (B, length)."""
    length = max(len(s) for s in seqs) + 1 if length is None else length
    out = np.full((len(seqs), length), IGNORE, np.int64)
    for b, s in enumerate(seqs):
        if len(s) + 1 > length:
            raise ValueError(f"length: expected >= {len(s) + 1} (a sequence of {len(s)} pointers and END), "
                             f"got {length}")
        out[b, : len(s)] = np.asarray(s, np.int64) + 1
        out[b, len(s)] = 0
    return out


def sample_sorting(rng: np.random.Generator, batch: int, n: int):
    """x (B, n, 1) uniform in [0, 1) and targets (B, n + 1): the 1-based argsort, then END."""
    rng, B, n = _rng(rng), checks.positive_int(batch, "batch"), checks.positive_int(n, "n")
    x = rng.random((B, n, 1))
    return x, pad_pointers([list(np.argsort(x[b, :, 0], kind="stable")) for b in range(B)], n + 1)


def sample_convex_hull(rng: np.random.Generator, batch: int, n: int):
    """x (B, n, 2) uniform in the unit square and targets (B, n + 1): the hull, counter-clockwise from
    the leftmost point, 1-based, then END, then IGNORE."""
    rng, B, n = _rng(rng), checks.positive_int(batch, "batch"), checks.positive_int(n, "n")
    x = rng.random((B, n, 2))
    return x, pad_pointers([convex_hull(x[b]) for b in range(B)], n + 1)


def _strip(seq) -> list[int]:
    """The 0-based indices of a pointer sequence up to (not including) END or padding."""
    out = []
    for p in np.asarray(seq).tolist():
        if p <= 0:
            break
        out.append(p - 1)
    return out


def polygon_area(poly: np.ndarray) -> float:
    """|shoelace area| of the polygon with vertices poly (k, 2) in order."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _segments_cross(p, q, r, s) -> bool:
    """Do the closed segments pq and rs intersect?"""
    d1, d2, d3, d4 = _cross(r, s, p), _cross(r, s, q), _cross(p, q, r), _cross(p, q, s)
    if ((d1 > 0) != (d2 > 0)) and d1 != 0 and d2 != 0 and ((d3 > 0) != (d4 > 0)) and d3 != 0 and d4 != 0:
        return True

    def on(a, b, c):  # c collinear with ab and within its box
        return min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(a[1], b[1])

    return ((d1 == 0 and on(r, s, p)) or (d2 == 0 and on(r, s, q)) or (d3 == 0 and on(p, q, r))
            or (d4 == 0 and on(p, q, s)))


def is_simple_polygon(poly: np.ndarray) -> bool:
    """At least 3 vertices, no repeated vertex, no two non-adjacent edges that meet."""
    k = len(poly)
    if k < 3 or len({tuple(p) for p in poly.tolist()}) < k:
        return False
    for a in range(k):
        for b in range(a + 1, k):
            if b == a + 1 or (a == 0 and b == k - 1):
                continue  # adjacent edges share a vertex
            if _segments_cross(poly[a], poly[(a + 1) % k], poly[b], poly[(b + 1) % k]):
                return False
    return True


def hull_area_coverage(points: np.ndarray, pointers) -> float:
    """Area of the predicted polygon / area of the true hull, or NaN when the prediction is not a
    valid polygon (fewer than 3 vertices, a repeated vertex, an index out of range, self-crossing)."""
    n = len(points)
    idx = _strip(pointers)
    if any(i >= n for i in idx):
        return float("nan")
    poly = points[idx]
    if not is_simple_polygon(poly):
        return float("nan")
    return polygon_area(poly) / polygon_area(points[convex_hull(points)])


def _pair(pred, targets):
    pred, targets = np.asarray(pred), np.asarray(targets)
    if pred.ndim != 2 or targets.ndim != 2 or pred.shape[0] != targets.shape[0]:
        raise ValueError(f"pred: expected (B, S) pointers for targets of shape {targets.shape}, got {pred.shape}")
    S = max(pred.shape[1], targets.shape[1])
    pad = lambda a: np.pad(a, ((0, 0), (0, S - a.shape[1])), constant_values=IGNORE)  # noqa: E731
    return pad(pred), pad(targets)


def sequence_accuracy(pred, targets) -> float:
    """Fraction of examples whose predicted sequence, up to and including END, is the target."""
    pred, targets = _pair(pred, targets)
    keep = targets != IGNORE
    return float(np.mean(np.all((pred == targets) | ~keep, axis=1)))


def pointer_accuracy(pred, targets) -> float:
    """Fraction of the target's pointers (END and padding excluded) predicted at their position."""
    pred, targets = _pair(pred, targets)
    keep = targets > 0
    return float(((pred == targets) & keep).sum() / max(int(keep.sum()), 1))
