"""Multi-directional scans: a causal decay mixer (GLA) run along several scan orders of a grid.

The baseline of LightNet's "You Only Scan Once" (Qin et al., arXiv 2405.21022). A causal mixer
with a multiplicative decay,

    S_t = diag(alpha_t) S_{t-1} + k_t^T v_t,     o_t = K^-1/2 q_t S_t        (GLA, ref.mixers.gla)  (1)

lets token t see only the tokens before it in one order, through the product of the decays in
between. Image tokens have no natural order, so vision models built on (1) (Vim, VMamba) scan the
grid in several orders and combine the results. With scan s given as a permutation pi_s of the T
tokens (step i of scan s visits token pi_s(i)) and P_s the matrix that puts tokens in that order,
(P_s u)_i = u_{pi_s(i)}:

    o = (1 / S) sum_{s=1..S} P_s^T GLA(P_s q_s, P_s k_s, P_s v, P_s gk_s)     (combine="mean")      (2)

(``combine="sum"`` drops the 1 / S). q_s, k_s, gk_s may be one per scan or shared by all scans.
The orders, on a grid (n_0, n_1) whose tokens are numbered row-major (as
``ref.models.lightnet.image_tokens`` cuts them):

    "row"          row-major, left to right, top to bottom      pi(i) = i
    "row_reverse"  row-major backwards                          pi(i) = T - 1 - i
    "col"          column-major, top to bottom, left to right  (axis 0 fastest)
    "col_reverse"  column-major backwards

One scan ("row") is a causal model; two ("row", "row_reverse") give every token every other token,
as Vim's bidirectional scan; four are VMamba's cross-scan (SS2D). The backward of (2): P_s^T is a
gather with the inverse permutation, so for each scan

    (dq_s, dk_s, dv_s, dgk_s) = (1 / S) P_s^T GLA_backward(P_s do)                                   (3)

(permute, run, un-permute), summed over s for an input shared by the scans. The S scans are
stacked along the batch axis and run as one call of the mixer, as a cross-scan kernel runs them
side by side.

The layer is GLA's layer (``ref.models.gla``) with its mixer replaced by (2). As in VMamba's SS2D,
the value projection, the output norm, the output gate and W_o are shared and computed once per
token, and each scan has its own query, key and decay-gate projections (``num_scans`` at init;
without it they are shared as well, and the layer's parameters are exactly ``init_gla_layer``'s):

    q_s, k_s = x W_q^s, x W_k^s;  gk_s = logsigmoid(x W_a1^s W_a2^s + b_a^s) / 16;  v = x W_v        (4)
    o = (2);   y = (GroupNorm(o) * swish(x W_r + b_r)) W_o                                           (5)

Why not share everything: with shared projections, mean combining and mean pooling, the four scans
form a set that a transpose of a square image or a 180-degree rotation maps onto itself, so the
model could not tell a "6" from a "9" (tests/models/test_multiscan.py shows the symmetry).

The block and the classifier are LightNet's (``ref.models.lightnet``: same GLU, norms, embedding,
MD-TPE, pooling and head) with the token mixer swapped, so the two models differ only there:

    h = x + MultiScan(RMSNorm(x)),   y = h + GLU(RMSNorm(h))                                          (6)
    logits = head(mean_t RMSNorm(blocks(MD-TPE?(embed(tokens)))))                                     (7)

Conventions as ``ref.models.gla``: ``forward(params, x, **options) -> (y, cache)`` and
``backward(params, cache, dy) -> (dx, grads)``; the classifier's backward returns ``grads`` only.
"""

from __future__ import annotations

import numbers

import numpy as np

from ref import checks
from ref.mixers.gla import FORMS as GLA_FORMS
from ref.models.gla import (
    NORM_EPS,
    TAU,
    check_cotangent,
    check_dtype,
    check_input,
    check_params,
    check_rng,
    head_linear,
    head_linear_backward,
    init_gla_layer,
    xavier_uniform,
)
from ref.models.lightnet import NORM_EPS as BLOCK_NORM_EPS
from ref.models.lightnet import glu, glu_backward, init_glu, md_tpe, md_tpe_backward
from ref.nn import (
    cross_entropy,
    cross_entropy_backward,
    group_norm,
    group_norm_backward,
    linear,
    linear_backward,
    logsigmoid,
    logsigmoid_backward,
    rms_norm,
    rms_norm_backward,
    silu,
    silu_backward,
)

__all__ = [
    "SCANS",
    "COMBINES",
    "MIXER_FORMS",
    "DIRECTIONAL",
    "INITS",
    "scans_for",
    "scan_permutation",
    "multiscan_gla",
    "multiscan_gla_backward",
    "init_multiscan_layer",
    "multiscan_layer",
    "multiscan_layer_backward",
    "init_multiscan_block",
    "multiscan_block",
    "multiscan_block_backward",
    "init_multiscan_classifier",
    "multiscan_forward",
    "multiscan_backward",
    "multiscan_loss_and_grads",
]

SCANS = ("row", "row_reverse", "col", "col_reverse")
COMBINES = ("mean", "sum")
MIXER_FORMS = tuple(GLA_FORMS)  # ("recurrent", "parallel", "chunked")
DIRECTIONAL = ("W_q", "W_k", "W_a1", "W_a2", "b_a")  # one per scan with ``num_scans`` (4)
INITS = ("gla", "lightnet")
_BY_COUNT = {1: ("row",), 2: ("row", "row_reverse"), 4: SCANS}


# ------------------------------------------------------------------------------------------------
# scan orders


def scans_for(num_scans: int) -> tuple[str, ...]:
    """The usual set of ``num_scans`` orders: 1 ("row"), 2 (+ "row_reverse", bidirectional) or 4
    (+ "col", "col_reverse", the cross-scan)."""
    if isinstance(num_scans, bool) or not isinstance(num_scans, numbers.Integral) or int(num_scans) not in _BY_COUNT:
        raise ValueError(f"num_scans: expected 1, 2 or 4, got {num_scans!r}")
    return _BY_COUNT[int(num_scans)]


def _check_grid(grid, T: int) -> tuple[int, ...]:
    """The token grid (n_0, ..., n_{m-1}) with prod n_a = T; None means the 1-D grid (T,)."""
    if grid is None:
        return (T,)
    if not isinstance(grid, (tuple, list)) or not grid:
        raise ValueError(f"grid: expected a non-empty tuple of axis lengths (n_0, ..., n_(m-1)), got {grid!r}")
    grid = tuple(checks.positive_int(n, "grid") for n in grid)
    if int(np.prod(grid)) != T:
        raise ValueError(f"grid: expected axis lengths whose product is the number of tokens T = {T}, got {grid}")
    return grid


def _check_scans(scans) -> tuple[str, ...]:
    if isinstance(scans, str) or not isinstance(scans, (tuple, list)) or not scans:
        raise ValueError(f"scans: expected a non-empty tuple of names from {SCANS}, got {scans!r}")
    for s in scans:
        checks.one_of(s, "scans", SCANS)
    if len(set(scans)) != len(scans):
        raise ValueError(f"scans: expected distinct scan orders, got {tuple(scans)}")
    return tuple(scans)


def scan_permutation(grid, scan: str) -> np.ndarray:
    """pi (T,) int64: step i of the scan visits the token pi[i] (tokens numbered row-major).

    "col" visits axis 0 fastest (on a 2-D grid: down each column, the columns left to right); on
    a grid of more axes it reverses the order of all axes. On a 1-D grid "col" is "row"."""
    if not isinstance(grid, (tuple, list)) or not grid:
        raise ValueError(f"grid: expected a non-empty tuple of axis lengths (n_0, ..., n_(m-1)), got {grid!r}")
    grid = tuple(checks.positive_int(n, "grid") for n in grid)
    checks.one_of(scan, "scan", SCANS)
    ids = np.arange(int(np.prod(grid)), dtype=np.int64).reshape(grid)  # token id at each grid position
    if scan.startswith("col"):
        ids = ids.transpose(tuple(range(len(grid) - 1, -1, -1)))  # axis 0 becomes the fastest
    order = ids.ravel()
    return order[::-1].copy() if scan.endswith("reverse") else order


def _gather(a, index):
    """a (S or 1, B, T, ...) read along T at index (S, T): out[s, :, i] = a[s or 0, :, index[s, i]]."""
    S, T = index.shape
    return np.take_along_axis(a, index.reshape((S, 1, T) + (1,) * (a.ndim - 3)), axis=2)  # (S, B, T, ...)


# ------------------------------------------------------------------------------------------------
# the mixer (2)-(3)


def _check_form(form, chunk_size) -> dict:
    checks.one_of(form, "form", MIXER_FORMS)
    return {"chunk_size": checks.positive_int(chunk_size, "chunk_size")} if form == "chunked" else {}


def _mixer_input(a, name, S, lead, last, dims):
    """``a`` shared by the scans, ``dims`` = (B, T, H, X), or one entry per scan, (S, B, T, H, X).
    ``lead`` = (B, T, H) and ``last`` (X, or None for any) from q. Returns the leading-scan form
    (S or 1, B, T, H, X) and whether it was per scan."""
    a = checks.float_array(a, name)
    if a.ndim not in (4, 5):
        raise ValueError(f"{name}: expected {dims} or (S, {dims[1:]} with S = {S} scans, got shape {a.shape}")
    per_scan = a.ndim == 5
    if per_scan and a.shape[0] != S:
        raise ValueError(f"{name}: expected one entry per scan, (S, ...) with S = {S}, got shape {a.shape}")
    got = a.shape[1:] if per_scan else a.shape
    if got[:3] != lead or (last is not None and got[3] != last):
        want = f"{dims} = {lead + (last,)}" if last is not None else f"{dims} with (B, T, H) = {lead}"
        raise ValueError(f"{name}: expected shape {want} (from q), got {a.shape}")
    return (a if per_scan else a[None]), per_scan


def multiscan_gla(
    q,
    k,
    v,
    gk=None,
    *,
    grid=None,
    scans=SCANS,
    combine: str = "mean",
    form: str = "chunked",
    chunk_size: int = 64,
    scale=None,
):
    """GLA along several scan orders of the token grid, combined (2). Returns ``(o, cache)``.

    The tokens are the row-major cells of ``grid`` (default (T,)). q, k, gk (B, T, H, K) and
    v (B, T, H, V) are shared by all scans, or carry a leading axis with one entry per scan
    ((S, B, T, H, K)); gk holds natural-log gates <= 0, or None (no decay). ``scans``: S names from
    :data:`SCANS`; ``combine``: "mean" or "sum"; ``form``, ``chunk_size``: GLA's form for the scans;
    ``scale`` default K^-1/2. o (B, T, H, V).
    """
    scans = _check_scans(scans)
    S = len(scans)
    q_ = checks.float_array(q, "q")
    if q_.ndim not in (4, 5):
        raise ValueError(f"q: expected (B, T, H, K) or (S, B, T, H, K), got shape {q_.shape}")
    B, T, H, K = q_.shape[-4:]
    checks.nonempty_time(T, "q")
    q, q_per = _mixer_input(q, "q", S, (B, T, H), K, "(B, T, H, K)")
    k, k_per = _mixer_input(k, "k", S, (B, T, H), K, "(B, T, H, K)")
    v, v_per = _mixer_input(v, "v", S, (B, T, H), None, "(B, T, H, V)")
    gk, gk_per = (None, False) if gk is None else _mixer_input(gk, "gk", S, (B, T, H), K, "(B, T, H, K)")
    grid = _check_grid(grid, T)
    checks.one_of(combine, "combine", COMBINES)
    options = _check_form(form, chunk_size)
    perms = np.stack([scan_permutation(grid, s) for s in scans])  # (S, T)
    inv = np.argsort(perms, axis=1)  # (S, T): inv[s, pi_s(i)] = i

    def to_scans(a):  # P_s a_s for every scan, stacked along the batch axis: (S*B, T, H, X)
        return _gather(a, perms).reshape((S * B,) + a.shape[2:])

    stacked = [to_scans(a) for a in (q, k, v)] + [None if gk is None else to_scans(gk)]
    o_scans, _, mix_cache = GLA_FORMS[form][0](*stacked, scale=scale, **options)  # (1) along every order
    weight = 1.0 / S if combine == "mean" else 1.0
    o = weight * _gather(o_scans.reshape((S, B) + o_scans.shape[1:]), inv).sum(axis=0)  # (2): (B, T, H, V)
    cache = (form, mix_cache, perms, inv, weight, o.shape, o.dtype, (q_per, k_per, v_per, gk_per))
    return o, cache


def multiscan_gla_backward(do, cache):
    """Gradients ``(dq, dk, dv, dgk)`` by (3), each shaped like its input (shared or per scan);
    dgk is None without gates."""
    form, mix_cache, perms, inv, weight, shape, dtype, per_scan = cache
    do = checks.float_array(do, "do", ndim=4, dims="(B, T, H, V)")
    checks.same_shape(do, "do", shape, "(B, T, H, V)", "the shape of the output")
    checks.same_dtype(do, "do", dtype, "the dtype of the output")
    S, B = perms.shape[0], shape[0]
    do_scans = _gather(weight * do[None], perms).reshape((S * B,) + do.shape[1:])  # P_s do: (S*B, T, H, V)
    grads = GLA_FORMS[form][1](do_scans, None, mix_cache)[:4]  # dq, dk, dv, dgk in scan order

    def from_scans(d, per):  # P_s^T d_s: (S, B, T, H, X), summed over s for a shared input
        if d is None:
            return None
        d = _gather(d.reshape((S, B) + d.shape[1:]), inv)
        return d if per else d.sum(axis=0)

    return tuple(from_scans(d, per) for d, per in zip(grads, per_scan))  # (3)


# ------------------------------------------------------------------------------------------------
# the layer (4)-(5)


def _init_gla(rng, D, num_heads, init, dtype, gla_options):
    """``init_gla_layer``; with init="lightnet" the projections W_q, W_k, W_v, W_r, W_o redrawn
    xavier-uniform with gain 1, as LightNet's layer draws its own (the gate keeps GLA's init)."""
    params = init_gla_layer(rng, D, num_heads, dtype=dtype, **gla_options)
    if init == "lightnet":
        for key in ("W_q", "W_k", "W_v", "W_r", "W_o"):
            if key in params:
                shape = params[key].shape
                params[key] = xavier_uniform(rng, shape, shape[0], int(np.prod(shape[1:])), 1.0, params[key].dtype)
    return params


def init_multiscan_layer(
    rng: np.random.Generator,
    D: int,
    num_heads: int = 2,
    *,
    num_scans: int | None = None,
    init: str = "gla",
    dtype=np.float64,
    **gla_options,
) -> dict:
    """Parameters of the layer: GLA's (``init_gla_layer(rng, D, num_heads, **gla_options)``:
    key_dim, value_dim, gate_rank, decay_gate, output_gate), with the directional ones
    (:data:`DIRECTIONAL`: W_q, W_k and the gate) moved into ``params["scans"]``, a list of
    ``num_scans`` dicts, one per scan, each drawn afresh. ``num_scans=None``: all shared.

    ``init``: "gla" (the GLA paper's: xavier gain 2^-2.5 for W_q, W_k, N(0, 0.02) for W_v, W_r,
    W_o) or "lightnet" (xavier-uniform, gain 1, for every projection, as ``init_lightnet_layer``;
    the decay gate keeps GLA's init)."""
    rng = check_rng(rng)
    checks.one_of(init, "init", INITS)
    params = _init_gla(rng, D, num_heads, init, dtype, gla_options)
    if num_scans is None:
        return params
    n = checks.positive_int(num_scans, "num_scans")
    directional = [{key: params.pop(key) for key in DIRECTIONAL if key in params}]
    for _ in range(n - 1):
        fresh = _init_gla(rng, D, num_heads, init, dtype, gla_options)
        directional.append({key: fresh[key] for key in DIRECTIONAL if key in fresh})
    params["scans"] = directional
    return params


def _layer_spec(params, where: str):
    """(D, H, K, V, dtype, gated, output_gated, directional parts) after checking every shape."""
    if not isinstance(params, dict) or "W_v" not in params:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{where}: expected a layer {{'W_v', 'W_o', 'norm_weight', ...}}, got {got}")
    W_v = checks.float_array(params["W_v"], f"{where}/W_v", ndim=3, dims="(D, H, V)")
    D, H, V = W_v.shape
    dtype = W_v.dtype
    if "scans" in params:
        parts = params["scans"]
        if not isinstance(parts, (list, tuple)) or not parts:
            raise ValueError(f"{where}/scans: expected a non-empty list of per-scan parameters, got {parts!r}")
        names = [f"{where}/scans/{i}" for i in range(len(parts))]
    else:
        parts, names = [{key: params[key] for key in DIRECTIONAL if key in params}], [where]
    if "W_q" not in parts[0]:
        raise ValueError(f"{names[0]}: expected a parameter 'W_q' of shape (D, H, K), got keys {sorted(parts[0])}")
    K = checks.float_array(parts[0]["W_q"], f"{names[0]}/W_q", ndim=3, dims="(D, H, K)").shape[2]
    gated = "W_a1" in parts[0]
    for part, name in zip(parts, names):
        spec = {"W_q": ((D, H, K), "(D, H, K)"), "W_k": ((D, H, K), "(D, H, K)")}
        if gated:
            if "W_a1" not in part:
                got = sorted(part)
                raise ValueError(f"{name}: expected a parameter 'W_a1' of shape (D, R) (as the first scan's), got keys {got}")
            R = checks.float_array(part["W_a1"], f"{name}/W_a1", ndim=2, dims="(D, R)").shape[1]
            spec.update({"W_a1": ((D, R), "(D, R)"), "W_a2": ((R, H, K), "(R, H, K)"), "b_a": ((H, K), "(H, K)")})
        check_params(part, name, spec, dtype)
    spec = {"W_v": ((D, H, V), "(D, H, V)"), "norm_weight": ((H * V,), "(H*V,)"), "W_o": ((H * V, D), "(H*V, D)")}
    output_gated = "W_r" in params
    if output_gated:
        spec.update({"W_r": ((D, H * V), "(D, H*V)"), "b_r": ((H * V,), "(H*V,)")})
    shared = {key: value for key, value in params.items() if key not in DIRECTIONAL and key != "scans"}
    check_params(shared, where, spec, dtype)
    return D, H, K, V, dtype, gated, output_gated, parts


def _directional(part, x, gated):
    """(4) for one set of directional parameters: q, k (B, T, H, K), gk or None; and the cache."""
    c = {}
    q, c["q"] = head_linear(x, part["W_q"])
    k, c["k"] = head_linear(x, part["W_k"])
    gk = None
    if gated:
        a1, c["a1"] = linear(x, part["W_a1"])  # (B, T, R)
        a2, c["a2"] = head_linear(a1, part["W_a2"], part["b_a"])  # (B, T, H, K)
        ls, c["logsigmoid"] = logsigmoid(a2)
        gk = ls / TAU  # (4): log alpha = logsigmoid(x W_a1 W_a2 + b_a) / tau
    return q, k, gk, c


def _directional_backward(c, dq, dk, dgk, gated):
    """Returns ``(dx, grads)`` of :func:`_directional`."""
    g = {}
    dx, g["W_q"], _ = head_linear_backward(dq, c["q"])
    dx_k, g["W_k"], _ = head_linear_backward(dk, c["k"])
    dx = dx + dx_k
    if gated:
        (da2,) = logsigmoid_backward(dgk / TAU, c["logsigmoid"])
        da1, g["W_a2"], g["b_a"] = head_linear_backward(da2, c["a2"])
        dx_a, g["W_a1"], _ = linear_backward(da1, c["a1"])
        dx = dx + dx_a
    return dx, g


def multiscan_layer(
    params: dict,
    x: np.ndarray,
    *,
    grid=None,
    scans=SCANS,
    combine: str = "mean",
    form: str = "chunked",
    chunk_size: int = 64,
):
    """The layer (4)-(5) on x (B, T, D) whose tokens are the row-major cells of ``grid``; parameters
    from :func:`init_multiscan_layer` (with per-scan parameters, one entry per name in ``scans``).
    Returns ``(y, cache)``."""
    D, H, _, V, dtype, gated, output_gated, parts = _layer_spec(params, "params")
    x = check_input(x, D, dtype)
    scans = _check_scans(scans)
    per_scan = "scans" in params
    if per_scan and len(parts) != len(scans):
        raise ValueError(
            f"scans: expected {len(parts)} scan orders (the layer has parameters for {len(parts)}), got {scans}"
        )
    B, T, _ = x.shape
    c = {"gated": gated, "output_gated": output_gated, "per_scan": per_scan, "x_shape": x.shape, "dtype": dtype}
    # (4) the directional projections, once per scan (or once for all), and the shared values
    outs = [_directional(part, x, gated) for part in parts]
    c["directional"] = [out[3] for out in outs]
    q, k, gk = (np.stack(z) if per_scan else z[0] for z in zip(*(out[:3] for out in outs)))  # (S, B, T, H, K)
    if not gated:
        gk = None
    v, c["v"] = head_linear(x, params["W_v"])  # (B, T, H, V)
    # (2) the mixer along every scan order, combined
    o, c["mixer"] = multiscan_gla(
        q, k, v, gk, grid=grid, scans=scans, combine=combine, form=form, chunk_size=chunk_size
    )  # (B, T, H, V)
    o = o.reshape(B, T, H * V)  # (B, T, H*V)
    # (5) GroupNorm per head, output gate, W_o
    z, c["norm"] = group_norm(o, params["norm_weight"], None, num_groups=H, eps=NORM_EPS)
    if output_gated:
        r_pre, c["r_lin"] = linear(x, params["W_r"], params["b_r"])  # (B, T, H*V)
        r, c["r_silu"] = silu(r_pre)
        c["z"], c["r"] = z, r
        z = z * r
    y, c["out"] = linear(z, params["W_o"])  # (B, T, D)
    return y, c


def multiscan_layer_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``: dx (B, T, D) and grads shaped like ``params``."""
    c = cache
    g = {}
    dy = check_cotangent(dy, c["x_shape"], c["dtype"])
    # (5)
    dz, g["W_o"], _ = linear_backward(dy, c["out"])  # (B, T, H*V)
    dx = np.zeros(c["x_shape"], dy.dtype)
    if c["output_gated"]:
        dr = dz * c["z"]
        dz = dz * c["r"]
        (dr_pre,) = silu_backward(dr, c["r_silu"])
        dx_r, g["W_r"], g["b_r"] = linear_backward(dr_pre, c["r_lin"])
        dx += dx_r
    do, g["norm_weight"], _ = group_norm_backward(dz, c["norm"])  # (B, T, H*V)
    B, T, _ = do.shape
    H = params["W_v"].shape[1]
    # (3) the mixer: permute, run backward, un-permute (sum over scans for shared inputs)
    dq, dk, dv, dgk = multiscan_gla_backward(do.reshape(B, T, H, -1), c["mixer"])
    dx_v, g["W_v"], _ = head_linear_backward(dv, c["v"])
    dx += dx_v
    # (4) the directional projections
    if c["per_scan"]:
        g["scans"] = []
        for s, cs in enumerate(c["directional"]):
            dx_s, g_s = _directional_backward(cs, dq[s], dk[s], None if dgk is None else dgk[s], c["gated"])
            dx += dx_s
            g["scans"].append(g_s)
    else:
        dx_s, g_s = _directional_backward(c["directional"][0], dq, dk, dgk, c["gated"])
        dx += dx_s
        g.update(g_s)
    return dx, {key: g[key] for key in params}


# ------------------------------------------------------------------------------------------------
# the block (6): LightNet's block with the multi-scan layer as its token mixer


def init_multiscan_block(
    rng: np.random.Generator,
    D: int,
    num_heads: int = 2,
    *,
    mlp_hidden: int | None = None,
    dtype=np.float64,
    **layer_options,
) -> dict:
    """``{"norm1": {"weight"}, "attn": <layer>, "norm2": {"weight"}, "mlp": <GLU>}``, laid out as
    ``init_lightnet_block``; ``layer_options`` go to :func:`init_multiscan_layer`."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    D = checks.positive_int(D, "D")
    return {
        "norm1": {"weight": np.ones(D, dtype)},
        "attn": init_multiscan_layer(rng, D, num_heads, dtype=dtype, **layer_options),
        "norm2": {"weight": np.ones(D, dtype)},
        "mlp": init_glu(rng, D, mlp_hidden, dtype=dtype),
    }


def multiscan_block(params: dict, x: np.ndarray, **options):
    """The block (6) on x (B, T, D); ``options`` as :func:`multiscan_layer`. Returns ``(y, cache)``."""
    if not isinstance(params, dict) or set(params) != {"norm1", "attn", "norm2", "mlp"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a block {{'norm1', 'attn', 'norm2', 'mlp'}}, got {got}")
    n1, c_n1 = rms_norm(x, params["norm1"]["weight"], eps=BLOCK_NORM_EPS)
    a, c_attn = multiscan_layer(params["attn"], n1, **options)
    h = x + a  # (6)
    n2, c_n2 = rms_norm(h, params["norm2"]["weight"], eps=BLOCK_NORM_EPS)
    m, c_mlp = glu(params["mlp"], n2)
    return h + m, (c_n1, c_attn, c_n2, c_mlp)  # (6)


def multiscan_block_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``."""
    c_n1, c_attn, c_n2, c_mlp = cache
    dy = check_cotangent(dy, c_attn["x_shape"], c_attn["dtype"])
    dn2, g_mlp = glu_backward(params["mlp"], c_mlp, dy)
    dh_mlp, dw2 = rms_norm_backward(dn2, c_n2)
    dh = dy + dh_mlp
    dn1, g_attn = multiscan_layer_backward(params["attn"], c_attn, dh)
    dx_attn, dw1 = rms_norm_backward(dn1, c_n1)
    grads = {"norm1": {"weight": dw1}, "attn": g_attn, "norm2": {"weight": dw2}, "mlp": g_mlp}
    return dh + dx_attn, grads


# ------------------------------------------------------------------------------------------------
# the classifier (7)


def init_multiscan_classifier(
    rng: np.random.Generator,
    *,
    in_features: int,
    dim: int,
    num_classes: int,
    grid,
    num_layers: int = 2,
    num_heads: int = 2,
    num_scans: int | None = None,
    use_tpe: bool = False,
    init: str = "lightnet",
    mlp_hidden: int | None = None,
    dtype=np.float64,
    **gla_options,
) -> dict:
    """Parameters of the classifier (7), laid out and initialised as ``init_lightnet``'s:
    ``{"embed": {"W", "b"}, ["tpe": {"kernels"}], "blocks": [...], "norm": {"weight"}, "head":
    {"W", "b"}}``. ``num_scans``: per-scan directional parameters in every layer (None: shared by
    all scans); ``use_tpe``: LightNet's MD-TPE on the embeddings; ``init``: the layers' init
    (:func:`init_multiscan_layer`; "lightnet" by default, so that the two classifiers differ only
    in their token mixers); ``gla_options`` go to ``init_gla_layer``."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    F = checks.positive_int(in_features, "in_features")
    D = checks.positive_int(dim, "dim")
    C = checks.positive_int(num_classes, "num_classes")
    L = checks.positive_int(num_layers, "num_layers")
    if not isinstance(grid, (tuple, list)) or not grid:
        raise ValueError(f"grid: expected a non-empty tuple of axis lengths (n_0, ..., n_(m-1)), got {grid!r}")
    grid = tuple(checks.positive_int(n, "grid") for n in grid)
    params = {"embed": {"W": xavier_uniform(rng, (F, D), F, D, 1.0, dtype), "b": np.zeros(D, dtype)}}
    if use_tpe:
        params["tpe"] = {"kernels": [(0.02 * rng.standard_normal((2 * n - 1, D))).astype(dtype) for n in grid]}
    params["blocks"] = [
        init_multiscan_block(
            rng, D, num_heads, mlp_hidden=mlp_hidden, dtype=dtype, num_scans=num_scans, init=init, **gla_options
        )
        for _ in range(L)
    ]
    params["norm"] = {"weight": np.ones(D, dtype)}
    params["head"] = {"W": xavier_uniform(rng, (D, C), D, C, 1.0, dtype), "b": np.zeros(C, dtype)}
    return params


def multiscan_forward(
    params: dict,
    x: np.ndarray,
    *,
    grid=None,
    scans=SCANS,
    combine: str = "mean",
    form: str = "chunked",
    chunk_size: int = 64,
):
    """The classifier (7) on token features x (B, T, F) of the row-major cells of ``grid``.
    Returns ``(logits, cache)``, logits (B, C) from the mean over the tokens."""
    if not isinstance(params, dict) or not {"embed", "blocks", "norm", "head"} <= set(params):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a classifier {{'embed', 'blocks', 'norm', 'head', ['tpe']}}, got {got}")
    W_e = checks.float_array(params["embed"]["W"], "params/embed/W", ndim=2, dims="(F, D)")
    x = checks.float_array(x, "x", ndim=3, dims="(B, T, F)")
    if x.shape[2] != W_e.shape[0]:
        F = W_e.shape[0]
        raise ValueError(f"x: expected shape (B, T, F) with F = {F} (the rows of params/embed/W), got {x.shape}")
    checks.nonempty_time(x.shape[1], "x")
    checks.same_dtype(x, "x", W_e.dtype, "the dtype of the parameters")
    checks.finite(x, "x")
    grid = _check_grid(grid, x.shape[1])
    caches = {}
    h, caches["embed"] = linear(x, W_e, params["embed"]["b"])  # (B, T, D)
    if "tpe" in params:
        h, caches["tpe"] = md_tpe(h, params["tpe"]["kernels"], grid)
    caches["blocks"] = []
    for block in params["blocks"]:
        h, c = multiscan_block(block, h, grid=grid, scans=scans, combine=combine, form=form, chunk_size=chunk_size)
        caches["blocks"].append(c)
    h, caches["norm"] = rms_norm(h, params["norm"]["weight"], eps=BLOCK_NORM_EPS)
    caches["h_shape"] = h.shape
    logits, caches["head"] = linear(h.mean(axis=1), params["head"]["W"], params["head"]["b"])  # (B, C)
    return logits, caches


def multiscan_backward(params: dict, cache, dlogits: np.ndarray):
    """Returns ``grads`` shaped like ``params``."""
    grads = {}
    dh, dW, db = linear_backward(dlogits, cache["head"])
    grads["head"] = {"W": dW, "b": db}
    B, T, D = cache["h_shape"]
    dh = np.broadcast_to(dh[:, None, :] / T, (B, T, D))  # the mean over tokens
    dh, dw = rms_norm_backward(dh, cache["norm"])
    grads["norm"] = {"weight": dw}
    grads["blocks"] = [None] * len(params["blocks"])
    for i in range(len(params["blocks"]) - 1, -1, -1):
        dh, grads["blocks"][i] = multiscan_block_backward(params["blocks"][i], cache["blocks"][i], dh)
    if "tpe" in params:
        dh, dkernels = md_tpe_backward(dh, cache["tpe"])
        grads["tpe"] = {"kernels": dkernels}
    _, dW, db = linear_backward(dh, cache["embed"])
    grads["embed"] = {"W": dW, "b": db}
    return {key: grads[key] for key in params}


def multiscan_loss_and_grads(params: dict, x: np.ndarray, labels: np.ndarray, **options):
    """Mean cross-entropy of the classifier against integer ``labels`` (B,). Returns ``(loss,
    grads, logits)``; ``options`` as :func:`multiscan_forward`."""
    logits, cache = multiscan_forward(params, x, **options)
    loss, c_loss = cross_entropy(logits, labels)
    dlogits, _ = cross_entropy_backward(np.ones((), logits.dtype), c_loss)
    return float(loss), multiscan_backward(params, cache, dlogits), logits
