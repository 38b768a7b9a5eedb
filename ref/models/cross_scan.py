"""The 2-D selective scan (VMamba's SS2D): Mamba's selective scan run along four orders of an image's
patches, merged. The way the Mamba surveys (arXiv 2408.01129, 2406.03430) describe Mamba being
carried over to images; lesson 12 trains it.

A causal scan lets token t read only the tokens before it. Image patches have no "before", so
VMamba (Liu et al., arXiv 2401.10166) scans the grid of patches in S = 4 orders pi_s (row-major,
column-major, and both reversed: ``ref.models.multiscan.scan_permutation``), runs a selective scan
per order with its own parameters, and adds the results back at each token's place. With P_s the
matrix that puts the T tokens in the order of scan s, (P_s u)_i = u_{pi_s(i)}:

    CrossScan:   u_s = P_s u                      (B, T, E) -> (B, S, T, E)                      (1)
    CrossMerge:  y   = sum_s P_s^T y_s            (B, S, T, E) -> (B, T, E)                      (2)

CrossMerge is the adjoint (the transpose) of CrossScan, so each is the other's backward:
dL/du = CrossMerge(dL/du_s) and dL/dy_s = CrossScan(dL/dy).

The layer (VMamba's SS2D with Mamba's layer of ``ref.models.mamba`` inside; E = expand * D inner
channels, N state dims, R the step-size rank):

    [x_in, z] = x W_in                              in_proj, shared             (B, T, 2E)   (3)
    u = silu(x_in)                                                               (B, T, E)    (4)
    u_s = CrossScan(u)                              (1)                          (B, S, T, E)
    [dt_s, B_s, C_s] = u_s W_x^s                    x_proj, one per scan         (B, T, R+2N) (5)
    delta_s = dt_s W_dt^s                           dt_proj, one per scan        (B, T, E)    (6)
    y_s = S6(u_s, delta_s, -exp(A_log^s), B_s, C_s, D^s; dt_bias^s, softplus)    (B, T, E)    (7)
    y = CrossMerge(y_s)                             (2)                          (B, T, E)
    out = (LayerNorm(y) * silu(z)) W_out            out_norm, gate, out_proj     (B, T, D)    (8)

(7) is ``ref.mixers.selective_scan`` (Mamba's S6, mamba_ssm semantics). The S scans run in *one*
call: their channels are stacked, (B, S*E, T), with A, D, dt_bias concatenated (S*E, ...), and
B_s, C_s passed as the scan's grouped B, C (B, G = S, N, T), group s serving the channels of scan
s. That is VMamba's own layout (K = 4 directions times d_inner channels, B and C in K groups).
Summing in (2), not averaging, is VMamba's CrossMerge; the LayerNorm of (8) removes the scale.

Differences from VMamba's SS2D: no 3 x 3 depthwise convolution before (4) (so the scans alone
carry positional information; ``ref.nn.conv2d`` has one, an exercise of lesson 12), Mamba's
initialisation for every direction (``init_mamba_layer``), any subset of the four orders (1, 2 or 4
scans), no dropout.

The block and the classifier (Mamba's pre-norm residual block, (9) of ``ref.models.mamba``):

    h = x + SS2D(RMSNorm(x))                                                                  (9)
    logits = head(mean_t RMSNorm(blocks(embed(patches))))                                     (10)

Conventions as ``ref.models.mamba``: ``forward(params, x, **options) -> (y, cache)``,
``backward(params, cache, dy) -> (dx, grads)``; the classifier's backward returns ``grads``.
Options: ``grid`` (the patch grid, row-major tokens), ``scans`` (names from ``SCANS``; as many as
the layer has parameter sets), ``mode`` ("recurrent", "parallel", "chunked": the form of the
selective scan), ``chunk_size``, ``backend`` ("numpy", "numba", ...: passed to the scan).
"""

from __future__ import annotations

import numpy as np

from ref import checks
from ref.mixers.selective_scan import FORMS
from ref.models.gla import check_dtype, check_params, check_rng, xavier_uniform
from ref.models.mamba import BLOCK_NORM_EPS, init_mamba_layer
from ref.models.multiscan import SCANS, scan_permutation, scans_for
from ref.nn import (
    cross_entropy,
    cross_entropy_backward,
    layer_norm,
    layer_norm_backward,
    linear,
    linear_backward,
    rms_norm,
    rms_norm_backward,
    silu,
    silu_backward,
)

__all__ = [
    "SCANS",
    "MIXER_FORMS",
    "DIRECTIONAL",
    "scans_for",
    "cross_scan",
    "cross_scan_backward",
    "cross_merge",
    "cross_merge_backward",
    "init_ss2d_layer",
    "ss2d_layer",
    "ss2d_layer_backward",
    "init_ss2d_block",
    "ss2d_block",
    "ss2d_block_backward",
    "init_ss2d_classifier",
    "ss2d_forward",
    "ss2d_backward",
    "ss2d_loss_and_grads",
]

MIXER_FORMS = tuple(FORMS)  # ("recurrent", "parallel", "chunked")
DIRECTIONAL = ("x_proj", "dt_proj", "dt_bias", "A_log", "D")  # one set per scan order
OUT_NORM_EPS = 1e-5  # VMamba's out_norm (nn.LayerNorm's default)


# ------------------------------------------------------------------------------------------------
# CrossScan and CrossMerge (1)-(2)


def _permutations(grid, scans, T: int) -> np.ndarray:
    """pi (S, T) int64 after checking ``grid`` (product T) and ``scans`` (distinct names)."""
    if isinstance(scans, str) or not isinstance(scans, (tuple, list)) or not scans:
        raise ValueError(f"scans: expected a non-empty tuple of names from {SCANS}, got {scans!r}")
    if len(set(scans)) != len(scans):
        raise ValueError(f"scans: expected distinct scan orders, got {tuple(scans)}")
    perms = np.stack([scan_permutation(grid, s) for s in scans])  # validates grid and names: (S, T)
    if perms.shape[1] != T:
        raise ValueError(f"grid: expected axis lengths whose product is the number of tokens T = {T}, got {grid}")
    return perms


def cross_scan(x: np.ndarray, *, grid, scans=SCANS):
    """(1): x (B, T, X), tokens the row-major cells of ``grid`` -> xs (B, S, T, X), xs[:, s, i] =
    x[:, pi_s(i)] (step i of scan s). Returns ``(xs, cache)``."""
    x = checks.float_array(x, "x", ndim=3, dims="(B, T, X)")
    perms = _permutations(grid, scans, x.shape[1])
    xs = np.ascontiguousarray(x[:, perms])  # (B, S, T, X)
    return xs, (perms, x.shape, x.dtype)


def _merge(ys: np.ndarray, perms: np.ndarray) -> np.ndarray:
    """sum_s P_s^T ys[:, s]: (B, S, T, X) -> (B, T, X)."""
    y = np.zeros((ys.shape[0],) + ys.shape[2:], ys.dtype)  # (B, T, X)
    for s, perm in enumerate(perms):
        y[:, perm] += ys[:, s]  # step i of scan s belongs to token perm[i]
    return y


def cross_scan_backward(dxs: np.ndarray, cache):
    """The adjoint of (1) is (2): ``(dx,)`` with dx = sum_s P_s^T dxs_s."""
    perms, shape, dtype = cache
    dxs = checks.float_array(dxs, "dxs", ndim=4, dims="(B, S, T, X)")
    checks.same_shape(dxs, "dxs", (shape[0], len(perms)) + shape[1:], "(B, S, T, X)", "the shape of the output")
    checks.same_dtype(dxs, "dxs", dtype, "the dtype of the output")
    return (_merge(dxs, perms),)


def cross_merge(ys: np.ndarray, *, grid, scans=SCANS):
    """(2): ys (B, S, T, X), ys[:, s] in the order of scan s -> y (B, T, X) = sum_s P_s^T ys_s.
    Returns ``(y, cache)``."""
    ys = checks.float_array(ys, "ys", ndim=4, dims="(B, S, T, X)")
    perms = _permutations(grid, scans, ys.shape[2])
    if ys.shape[1] != len(perms):
        raise ValueError(f"ys: expected shape (B, S, T, X) with S = {len(perms)} scans, got {ys.shape}")
    y = _merge(ys, perms)
    return y, (perms, y.shape, y.dtype)


def cross_merge_backward(dy: np.ndarray, cache):
    """The adjoint of (2) is (1): ``(dys,)`` with dys[:, s] = P_s dy."""
    perms, shape, dtype = cache
    dy = checks.float_array(dy, "dy", ndim=3, dims="(B, T, X)")
    checks.same_shape(dy, "dy", shape, "(B, T, X)", "the shape of the output")
    checks.same_dtype(dy, "dy", dtype, "the dtype of the output")
    return (np.ascontiguousarray(dy[:, perms]),)  # (B, S, T, X)


# ------------------------------------------------------------------------------------------------
# the layer (3)-(8)


def init_ss2d_layer(
    rng: np.random.Generator,
    D: int,
    *,
    num_scans: int = 4,
    N: int = 16,
    expand: int = 2,
    dt_rank: int | None = None,
    dt_min: float = 1e-3,
    dt_max: float = 1e-1,
    n_layer: int = 1,
    dtype=np.float64,
) -> dict:
    """Parameters of the layer: ``{"in_proj" (D, 2E), "scans": [per scan: x_proj (E, R+2N),
    dt_proj (R, E), dt_bias (E,), A_log (E, N), D (E,)], "out_norm": {"weight", "bias"} (E,),
    "out_proj" (E, D)}``. Every part drawn as ``init_mamba_layer`` draws it (one fresh draw per
    scan for the directional parts); the LayerNorm starts at weight 1, bias 0."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    S = checks.positive_int(num_scans, "num_scans")
    options = dict(N=N, expand=expand, conv_width=1, dt_rank=dt_rank, dt_min=dt_min, dt_max=dt_max,
                   n_layer=n_layer, dtype=dtype)
    draws = [init_mamba_layer(rng, D, **options) for _ in range(S)]
    E = draws[0]["A_log"].shape[0]
    return {
        "in_proj": draws[0]["in_proj"],
        "scans": [{key: d[key] for key in DIRECTIONAL} for d in draws],
        "out_norm": {"weight": np.ones(E, dtype), "bias": np.zeros(E, dtype)},
        "out_proj": draws[0]["out_proj"],
    }


def _layer_spec(params, where: str):
    """(D, E, R, N, S, dtype) after checking every shape."""
    if not isinstance(params, dict) or not {"in_proj", "scans", "out_norm", "out_proj"} <= set(params):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"{where}: expected an SS2D layer {{'in_proj', 'scans', 'out_norm', 'out_proj'}}, got {got}")
    W_in = checks.float_array(params["in_proj"], f"{where}/in_proj", ndim=2, dims="(D, 2E)")
    D, E2 = W_in.shape
    if E2 % 2:
        raise ValueError(f"{where}/in_proj: expected shape (D, 2E) with an even number of columns, got {W_in.shape}")
    E, dtype = E2 // 2, W_in.dtype
    parts = params["scans"]
    if not isinstance(parts, (list, tuple)) or not parts or not all(isinstance(p, dict) for p in parts):
        raise ValueError(f"{where}/scans: expected a non-empty list of per-scan parameter dicts, got {parts!r:.80}")
    for key in ("A_log", "x_proj"):
        if key not in parts[0]:
            raise ValueError(f"{where}/scans/0: expected a parameter {key!r}, got keys {sorted(parts[0])}")
    N = checks.float_array(parts[0]["A_log"], f"{where}/scans/0/A_log", ndim=2, dims="(E, N)").shape[1]
    R = checks.float_array(parts[0]["x_proj"], f"{where}/scans/0/x_proj", ndim=2, dims="(E, R+2N)").shape[1] - 2 * N
    if R < 1:
        shape = parts[0]["x_proj"].shape
        raise ValueError(f"{where}/scans/0/x_proj: expected (E, R+2N) with R >= 1 and N = {N}, got {shape}")
    spec = {
        "x_proj": ((E, R + 2 * N), "(E, R+2N)"),
        "dt_proj": ((R, E), "(R, E)"),
        "dt_bias": ((E,), "(E,)"),
        "A_log": ((E, N), "(E, N)"),
        "D": ((E,), "(E,)"),
    }
    for s, part in enumerate(parts):
        check_params(part, f"{where}/scans/{s}", spec, dtype)
    check_params(params["out_norm"], f"{where}/out_norm", {"weight": ((E,), "(E,)"), "bias": ((E,), "(E,)")}, dtype)
    shared = {"in_proj": params["in_proj"], "out_proj": params["out_proj"]}
    check_params(shared, where, {"in_proj": ((D, 2 * E), "(D, 2E)"), "out_proj": ((E, D), "(E, D)")}, dtype)
    return D, E, R, N, len(parts), dtype


def _check_x(x, D: int, dtype, name: str = "x") -> np.ndarray:
    return checks.finite(checks.sequence_input(x, name, D, dtype), name)


def _scan_options(mode, chunk_size, backend) -> dict:
    checks.one_of(mode, "mode", MIXER_FORMS)
    options = {"backend": backend}
    if mode == "chunked":
        options["chunk_size"] = checks.positive_int(chunk_size, "chunk_size")
    return options


def _to_channels(a: np.ndarray) -> np.ndarray:
    """(B, S, T, X) -> (B, S*X, T): the scans' channels side by side, channel s*X + x."""
    Bn, S, T, X = a.shape
    return np.ascontiguousarray(a.transpose(0, 1, 3, 2).reshape(Bn, S * X, T))


def _from_channels(a: np.ndarray, S: int) -> np.ndarray:
    """(B, S*X, T) -> (B, S, T, X), the inverse of :func:`_to_channels`."""
    Bn, SX, T = a.shape
    return a.reshape(Bn, S, SX // S, T).transpose(0, 1, 3, 2)


def ss2d_layer(
    params: dict,
    x: np.ndarray,
    *,
    grid,
    scans=SCANS,
    mode: str = "recurrent",
    chunk_size: int = 64,
    backend: str = "numpy",
):
    """The layer (3)-(8) on x (B, T, D), tokens the row-major cells of ``grid``; ``scans``: one name
    per parameter set of ``params["scans"]``. Returns ``(y, cache)``, y (B, T, D)."""
    D, E, R, N, S, dtype = _layer_spec(params, "params")
    x = _check_x(x, D, dtype)
    if isinstance(scans, (tuple, list)) and len(scans) != S:
        raise ValueError(f"scans: expected {S} scan orders (the layer has parameters for {S}), got {tuple(scans)}")
    options = _scan_options(mode, chunk_size, backend)
    c = {"x_shape": x.shape, "dtype": dtype, "mode": mode, "S": S}
    # (3) [x_in, z] = x W_in
    xz, c["in_proj"] = linear(x, params["in_proj"])  # (B, T, 2E)
    x_in, z = xz[..., :E], xz[..., E:]  # (B, T, E) each
    # (4) u = silu(x_in)
    u, c["silu"] = silu(x_in)  # (B, T, E)
    # (1) CrossScan: every scan order of the tokens
    us, c["cross_scan"] = cross_scan(u, grid=grid, scans=scans)  # (B, S, T, E)
    # (5)-(6) the directional projections, one set per scan
    c["x_proj"], c["dt_proj"] = [], []
    deltas, Bs, Cs = [], [], []
    for s, part in enumerate(params["scans"]):
        xbc, cx = linear(us[:, s], part["x_proj"])  # (B, T, R+2N)
        dt_low, B_s, C_s = xbc[..., :R], xbc[..., R : R + N], xbc[..., R + N :]
        delta_s, cd = linear(dt_low, part["dt_proj"])  # (B, T, E)
        c["x_proj"].append(cx)
        c["dt_proj"].append(cd)
        deltas.append(delta_s)
        Bs.append(B_s)
        Cs.append(C_s)
    # (7) the S selective scans as one: channels (s, e) stacked, B and C grouped by scan
    u_ch = _to_channels(us)  # (B, S*E, T)
    delta_ch = _to_channels(np.stack(deltas, axis=1))  # (B, S*E, T)
    B_g = np.stack(Bs, axis=1).transpose(0, 1, 3, 2)  # (B, S, N, T): group s serves the channels of scan s
    C_g = np.stack(Cs, axis=1).transpose(0, 1, 3, 2)  # (B, S, N, T)
    A_log = np.concatenate([p["A_log"] for p in params["scans"]])  # (S*E, N)
    A = -np.exp(A_log)
    c["A"] = A
    D_skip = np.concatenate([p["D"] for p in params["scans"]])  # (S*E,)
    dt_bias = np.concatenate([p["dt_bias"] for p in params["scans"]])  # (S*E,)
    y_ch, _, c["scan"] = FORMS[mode][0](u_ch, delta_ch, A, B_g, C_g, D_skip, None, dt_bias, True, **options)
    # (2) CrossMerge: every scan's outputs back at their tokens, summed
    ys = np.ascontiguousarray(_from_channels(y_ch, S))  # (B, S, T, E), each in its scan's order
    y, c["cross_merge"] = cross_merge(ys, grid=grid, scans=scans)  # (B, T, E)
    # (8) out = (LayerNorm(y) * silu(z)) W_out
    yn, c["out_norm"] = layer_norm(y, params["out_norm"]["weight"], params["out_norm"]["bias"], eps=OUT_NORM_EPS)
    gate, c["gate"] = silu(z)  # (B, T, E)
    c["yn"], c["g"] = yn, gate
    out, c["out_proj"] = linear(yn * gate, params["out_proj"])  # (B, T, D)
    c["sizes"] = (E, R, N)
    return out, c


def ss2d_layer_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``: dx (B, T, D) and grads shaped like ``params``."""
    c = cache
    E, R, N = c["sizes"]
    S = c["S"]
    dy = checks.float_array(dy, "dy", ndim=3, dims="(B, T, D)")
    checks.same_shape(dy, "dy", c["x_shape"], "(B, T, D)", "the shape of the output")
    checks.same_dtype(dy, "dy", c["dtype"], "the dtype of the output")
    g = {}
    # (8)
    dh, g["out_proj"], _ = linear_backward(dy, c["out_proj"])  # (B, T, E)
    (dz,) = silu_backward(dh * c["yn"], c["gate"])
    dy_merged, dw, db = layer_norm_backward(dh * c["g"], c["out_norm"])
    g["out_norm"] = {"weight": dw, "bias": db}
    # (2) the adjoint of CrossMerge is CrossScan
    (dys,) = cross_merge_backward(dy_merged, c["cross_merge"])  # (B, S, T, E)
    # (7) one backward for the S scans
    du_ch, ddelta_ch, dA, dB_g, dC_g, dD, _, ddt_bias, _ = FORMS[c["mode"]][1](_to_channels(dys), None, c["scan"])
    dA_log = dA * c["A"]  # A = -exp(A_log): dA/dA_log = A
    dus = _from_channels(du_ch, S)  # (B, S, T, E): the scan's own path to u_s
    ddeltas = _from_channels(ddelta_ch, S)  # (B, S, T, E)
    dBs = dB_g.transpose(0, 1, 3, 2)  # (B, S, T, N)
    dCs = dC_g.transpose(0, 1, 3, 2)  # (B, S, T, N)
    # (5)-(6) per scan
    g["scans"] = []
    dus_total = np.empty_like(dus)
    for s in range(S):
        ddt_low, dW_dt, _ = linear_backward(np.ascontiguousarray(ddeltas[:, s]), c["dt_proj"][s])  # (B, T, R)
        dxbc = np.concatenate([ddt_low, dBs[:, s], dCs[:, s]], axis=-1)  # (B, T, R+2N)
        du_proj, dW_x, _ = linear_backward(dxbc, c["x_proj"][s])  # (B, T, E)
        dus_total[:, s] = dus[:, s] + du_proj  # u_s feeds the scan and x_proj: the gradients add
        rows = slice(s * E, (s + 1) * E)
        g["scans"].append(
            {"x_proj": dW_x, "dt_proj": dW_dt, "dt_bias": ddt_bias[rows], "A_log": dA_log[rows], "D": dD[rows]}
        )
    # (1) the adjoint of CrossScan is CrossMerge
    (du,) = cross_scan_backward(dus_total, c["cross_scan"])  # (B, T, E)
    # (4)
    (dx_in,) = silu_backward(du, c["silu"])
    # (3)
    dx, g["in_proj"], _ = linear_backward(np.concatenate([dx_in, dz], axis=-1), c["in_proj"])  # (B, T, D)
    return dx, {key: g[key] for key in params}


# ------------------------------------------------------------------------------------------------
# the block (9)


def init_ss2d_block(rng: np.random.Generator, D: int, *, dtype=np.float64, **layer_options) -> dict:
    """``{"norm": {"weight" (D,)}, "mixer": <SS2D layer>}``; ``layer_options`` go to
    :func:`init_ss2d_layer`."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    D = checks.positive_int(D, "D")
    return {"norm": {"weight": np.ones(D, dtype)}, "mixer": init_ss2d_layer(rng, D, dtype=dtype, **layer_options)}


def ss2d_block(params: dict, x: np.ndarray, **options):
    """The block (9) on x (B, T, D); ``options`` as :func:`ss2d_layer`. Returns ``(y, cache)``."""
    if not isinstance(params, dict) or set(params) != {"norm", "mixer"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected an SS2D block {{'norm', 'mixer'}}, got {got}")
    D, *_, dtype = _layer_spec(params["mixer"], "params/mixer")
    x = _check_x(x, D, dtype)
    n, c_norm = rms_norm(x, params["norm"]["weight"], eps=BLOCK_NORM_EPS)  # (B, T, D)
    a, c_mix = ss2d_layer(params["mixer"], n, **options)
    return x + a, (c_norm, c_mix)  # (9)


def ss2d_block_backward(params: dict, cache, dy: np.ndarray):
    """Returns ``(dx, grads)``."""
    c_norm, c_mix = cache
    dn, g_mix = ss2d_layer_backward(params["mixer"], c_mix, dy)
    dx_mix, dw = rms_norm_backward(dn, c_norm)
    return dy + dx_mix, {"norm": {"weight": dw}, "mixer": g_mix}


# ------------------------------------------------------------------------------------------------
# the classifier (10)


def init_ss2d_classifier(
    rng: np.random.Generator,
    *,
    in_features: int,
    dim: int,
    num_classes: int,
    num_layers: int = 1,
    num_scans: int = 4,
    dtype=np.float64,
    **layer_options,
) -> dict:
    """``{"embed": {"W" (F, D), "b"}, "blocks": [...], "norm": {"weight"}, "head": {"W" (D, C), "b"}}``:
    the embedding and head xavier-uniform (as ``init_multiscan_classifier``), the blocks by
    :func:`init_ss2d_block` with ``num_scans`` parameter sets and ``n_layer = num_layers``."""
    rng, dtype = check_rng(rng), check_dtype(dtype)
    F = checks.positive_int(in_features, "in_features")
    D = checks.positive_int(dim, "dim")
    C = checks.positive_int(num_classes, "num_classes")
    L = checks.positive_int(num_layers, "num_layers")
    return {
        "embed": {"W": xavier_uniform(rng, (F, D), F, D, 1.0, dtype), "b": np.zeros(D, dtype)},
        "blocks": [
            init_ss2d_block(rng, D, dtype=dtype, num_scans=num_scans, n_layer=L, **layer_options) for _ in range(L)
        ],
        "norm": {"weight": np.ones(D, dtype)},
        "head": {"W": xavier_uniform(rng, (D, C), D, C, 1.0, dtype), "b": np.zeros(C, dtype)},
    }


def ss2d_forward(params: dict, x: np.ndarray, **options):
    """The classifier (10) on patch features x (B, T, F) (the row-major cells of ``grid``); options
    as :func:`ss2d_layer`. Returns ``(logits, cache)``, logits (B, C) from the mean over tokens."""
    if not isinstance(params, dict) or set(params) != {"embed", "blocks", "norm", "head"}:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a classifier {{'embed', 'blocks', 'norm', 'head'}}, got {got}")
    W_e = checks.float_array(params["embed"]["W"], "params/embed/W", ndim=2, dims="(F, D)")
    x = checks.float_array(x, "x", ndim=3, dims="(B, T, F)")
    if x.shape[2] != W_e.shape[0]:
        F = W_e.shape[0]
        raise ValueError(f"x: expected shape (B, T, F) with F = {F} (the rows of params/embed/W), got {x.shape}")
    checks.same_dtype(x, "x", W_e.dtype, "the dtype of the parameters")
    caches = {}
    h, caches["embed"] = linear(x, W_e, params["embed"]["b"])  # (B, T, D)
    caches["blocks"] = []
    for block in params["blocks"]:
        h, cb = ss2d_block(block, h, **options)
        caches["blocks"].append(cb)
    h, caches["norm"] = rms_norm(h, params["norm"]["weight"], eps=BLOCK_NORM_EPS)
    caches["h_shape"] = h.shape
    logits, caches["head"] = linear(h.mean(axis=1), params["head"]["W"], params["head"]["b"])  # (B, C)
    return logits, caches


def ss2d_backward(params: dict, cache, dlogits: np.ndarray):
    """Returns ``grads`` shaped like ``params``."""
    grads = {}
    dh, dW, db = linear_backward(dlogits, cache["head"])
    grads["head"] = {"W": dW, "b": db}
    Bn, T, D = cache["h_shape"]
    dh = np.broadcast_to(dh[:, None, :] / T, (Bn, T, D))  # the mean over tokens
    dh, dw = rms_norm_backward(dh, cache["norm"])
    grads["norm"] = {"weight": dw}
    grads["blocks"] = [None] * len(params["blocks"])
    for i in range(len(params["blocks"]) - 1, -1, -1):
        dh, grads["blocks"][i] = ss2d_block_backward(params["blocks"][i], cache["blocks"][i], dh)
    _, dW, db = linear_backward(dh, cache["embed"])
    grads["embed"] = {"W": dW, "b": db}
    return {key: grads[key] for key in params}


def ss2d_loss_and_grads(params: dict, x: np.ndarray, labels: np.ndarray, **options):
    """Mean cross-entropy of the classifier against integer ``labels`` (B,). Returns ``(loss,
    grads, logits)``; ``options`` as :func:`ss2d_forward`."""
    logits, cache = ss2d_forward(params, x, **options)
    loss, c_loss = cross_entropy(logits, labels)
    dlogits, _ = cross_entropy_backward(np.ones((), logits.dtype), c_loss)
    return float(loss), ss2d_backward(params, cache, dlogits), logits
