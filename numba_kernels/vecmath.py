"""Vectorisable exp, softplus and sigmoid for the CPU kernels (numba; float32 and float64).

Why. ``math.exp`` or ``np.exp`` inside an ``@njit`` loop compiles to a call to libm's scalar
``expf``/``exp`` (numba uses Intel's SVML vector library only when it is installed, and it is not
one of our dependencies). A call in a loop body stops LLVM from vectorising the loop, so every
element pays a function call: 1.6 to 10 ns per exp on the 2-core reference machine, and 14 ns per
``math.tanh``. The versions here are branch-free arithmetic on the argument's bits, which LLVM
turns into AVX2/AVX-512 code: about 0.5 ns per float32 exp. Call them from ``@njit`` code on a
float32 or float64 scalar (they are numba ``overload``s, inlined); the float32 version is picked
when a kernel is compiled for float32 arrays, so float32 stays float32.

    vexp(x)       exp(x), within 1 ulp of the exact value over the whole range (overflow to inf,
                  underflow through the subnormals to 0; -inf gives 0, so a masked score of -inf
                  stays a probability of 0). NumPy's own float32 exp is within about 2.4 ulp.
    vlog1pexp(x)  log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), within 2 ulp; finite
                  arguments only (+-inf give NaN). logsigmoid(x) = -vlog1pexp(-x).
    vsoftplus(x)  vlog1pexp(x), and x itself above ``SOFTPLUS_THRESHOLD`` (torch's F.softplus,
                  mamba_ssm); within 2 ulp.
    lane_sum(v, n, lanes), lane_dot(x, y, n, lanes), lane_max(v, n, lanes)
                  the sum, dot product and maximum of the first n entries with ``LANES`` partial
                  results in ``lanes`` (scratch of LANES entries): an ordered float sum or running
                  maximum is a chain that LLVM may not reorder without unsafe flags, so it does not
                  vectorise; eight independent chains do.
    vsigmoid(x)   1 / (1 + exp(-x)) from w = exp(-|x|) only (nothing overflows):
                  1 / (1 + w) for x >= 0, w / (1 + w) below; within 3 ulp (two roundings after
                  vexp's error, which the flat derivative of 1 / (1 + w) does not amplify).

Kernels that call them compile with ``error_model="numpy"`` (``VECTOR_JIT``): numba's default
Python error model puts a ZeroDivisionError test before every division, which also blocks
vectorisation. ``tests/nn/test_vecmath.py`` measures every bound against extended precision.
"""

from __future__ import annotations

import struct

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

SOFTPLUS_THRESHOLD = 20  # softplus(x) = x above it (torch's F.softplus, mamba_ssm)
VECTOR_JIT = dict(fastmath={"contract"}, error_model="numpy")  # the options of kernels that use these
LANES = 8  # partial results of lane_sum, lane_dot and lane_max

# --- exp ---------------------------------------------------------------------------------------
# exp(x) = 2^k exp(r) with k = round(x / ln 2) and r = x - k ln 2 (ln 2 split in a high part with
# trailing zero bits and a low part, so k ln2_hi is exact: Cody-Waite), |r| <= ln 2 / 2; exp(r) by a
# polynomial; 2^k from its bits. Rounding to an integer without a float-to-int conversion (AVX2 has
# none for float64): x + 1.5 2^(p-1) - 1.5 2^(p-1) rounds x, and the integer sits in the low bits of
# x + 1.5 2^(p-1). The scale is applied as 2^k1 2^(k - k1) so both factors are normal numbers for
# every k from the smallest subnormal result to the largest finite one.

_MAGIC32 = 12582912.0  # 1.5 * 2**23
_MAGIC64 = 6755399441055744.0  # 1.5 * 2**52
_MAGIC32_BITS = struct.unpack("<i", struct.pack("<f", _MAGIC32))[0]
_MAGIC64_BITS = struct.unpack("<q", struct.pack("<d", _MAGIC64))[0]


@intrinsic
def _pow2_f32(typingctx, k):
    """2**k for an integer-valued float32 k in [-126, 127], assembled from its bits."""

    def codegen(context, builder, sig, args):
        i32 = ir.IntType(32)
        bits = builder.bitcast(builder.fadd(args[0], ir.Constant(ir.FloatType(), _MAGIC32)), i32)  # k in the low bits
        bits = builder.add(bits, ir.Constant(i32, (127 - _MAGIC32_BITS) % (1 << 32)))  # k + 127: the biased exponent
        return builder.bitcast(builder.shl(bits, ir.Constant(i32, 23)), ir.FloatType())

    return types.float32(types.float32), codegen


@intrinsic
def _pow2_f64(typingctx, k):
    """2**k for an integer-valued float64 k in [-1022, 1023], assembled from its bits."""

    def codegen(context, builder, sig, args):
        i64 = ir.IntType(64)
        bits = builder.bitcast(builder.fadd(args[0], ir.Constant(ir.DoubleType(), _MAGIC64)), i64)
        bits = builder.add(bits, ir.Constant(i64, (1023 - _MAGIC64_BITS) % (1 << 64)))
        return builder.bitcast(builder.shl(bits, ir.Constant(i64, 52)), ir.DoubleType())

    return types.float64(types.float64), codegen


def vexp(x):
    """exp(x) for a float32 or float64 scalar, within 1 ulp, in a form LLVM vectorises (in jitted code)."""
    return np.exp(x)


def vlog1pexp(x):
    """log(1 + exp(x)) for a finite float32 or float64 scalar, within 2 ulp, vectorisable (in jitted code)."""
    return np.logaddexp(0, x)


def vsoftplus(x):
    """log(1 + exp(x)), and x itself above 20 (torch's threshold); within 2 ulp, vectorisable (in jitted code)."""
    return x if x > SOFTPLUS_THRESHOLD else np.log1p(np.exp(x))


@overload(vexp, jit_options=VECTOR_JIT, inline="always")
def _vexp_impl(x):
    if x == types.float32:

        def exp32(x):
            f = np.float32
            xc = min(max(x, f(-104.0)), f(89.0))  # exp(-104) rounds to 0, exp(89) to inf
            k = (xc * f(1.4426950408889634) + f(_MAGIC32)) - f(_MAGIC32)  # round(x / ln 2)
            r = (xc - k * f(0.693359375)) - k * f(-2.12194440e-4)
            p = f(1.9875691500e-4)  # exp(r), Cephes expf
            p = p * r + f(1.3981999507e-3)
            p = p * r + f(8.3334519073e-3)
            p = p * r + f(4.1665795894e-2)
            p = p * r + f(1.6666665459e-1)
            p = p * r + f(5.0000001201e-1)
            p = p * (r * r) + r + f(1.0)
            k1 = (k * f(0.5) + f(_MAGIC32)) - f(_MAGIC32)
            return p * _pow2_f32(k1) * _pow2_f32(k - k1)

        return exp32
    if x == types.float64:

        def exp64(x):
            xc = min(max(x, -746.0), 710.0)
            k = (xc * 1.4426950408889634 + _MAGIC64) - _MAGIC64
            r = (xc - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10
            p = 1.0 / 6227020800.0  # exp(r): Taylor to r^13 / 13!, the remainder below 0.04 ulp
            p = p * r + 1.0 / 479001600.0
            p = p * r + 1.0 / 39916800.0
            p = p * r + 1.0 / 3628800.0
            p = p * r + 1.0 / 362880.0
            p = p * r + 1.0 / 40320.0
            p = p * r + 1.0 / 5040.0
            p = p * r + 1.0 / 720.0
            p = p * r + 1.0 / 120.0
            p = p * r + 1.0 / 24.0
            p = p * r + 1.0 / 6.0
            p = p * r + 0.5
            p = p * (r * r) + r + 1.0
            k1 = (k * 0.5 + _MAGIC64) - _MAGIC64
            return p * _pow2_f64(k1) * _pow2_f64(k - k1)

        return exp64
    return None


# log1pexp(x) = max(x, 0) + log1p(w), w = exp(-|x|) in (0, 1]. log1p(w) = log(y) + c with y = 1 + w in
# (1, 2] and c = (w - (y - 1)) / y the rounding of 1 + w to first order; log(y) = e ln 2 + log(m),
# m = y or y / 2 in [sqrt(1/2), sqrt(2)], log(m) = log((1 + s) / (1 - s)) with s = (m - 1) / (m + 1),
# a polynomial in s^2 (musl's logf and fdlibm's log).


@overload(vlog1pexp, jit_options=VECTOR_JIT, inline="always")
def _vlog1pexp_impl(x):
    if x == types.float32:

        def log1pexp32(x):
            f = np.float32
            w = vexp(-abs(x))
            y = f(1.0) + w
            c = (w - (y - f(1.0))) / y
            e = f(y > f(1.4142135))  # 1 or 0: no branches (inlined branches upset numba's IR checks)
            m = y * (f(1.0) - f(0.5) * e)
            g = m - f(1.0)  # exact
            s = g / (f(2.0) + g)
            z = s * s
            R = z * (f(0.66666662693) + z * (f(0.40000972152) + z * (f(0.28498786688) + z * f(0.24279078841))))
            hg = f(0.5) * g * g
            log_m = g - (hg - s * (hg + R))
            return max(x, f(0.0)) + (e * f(0.6931471805599453) + (log_m + c))

        return log1pexp32
    if x == types.float64:

        def log1pexp64(x):
            w = vexp(-abs(x))
            y = 1.0 + w
            c = (w - (y - 1.0)) / y
            e = np.float64(y > 1.4142135623730951)
            m = y * (1.0 - 0.5 * e)
            g = m - 1.0
            s = g / (2.0 + g)
            z = s * s
            z2 = z * z
            R = z2 * (3.999999999940941908e-01 + z2 * (2.222219843214978396e-01 + z2 * 1.531383769920937332e-01))
            R += z * (6.666666666666735130e-01 + z2 * (2.857142874366239149e-01 + z2 * (
                1.818357216161805012e-01 + z2 * 1.479819860511658591e-01)))
            hg = 0.5 * g * g
            log_m = g - (hg - s * (hg + R))
            return max(x, 0.0) + (e * 6.93147180559945309417e-01 + (log_m + c))

        return log1pexp64
    return None


@overload(vsoftplus, jit_options=VECTOR_JIT, inline="always")
def _vsoftplus_impl(x):
    if x not in (types.float32, types.float64):
        return None
    cast = np.float32 if x == types.float32 else np.float64
    threshold = cast(SOFTPLUS_THRESHOLD)

    def softplus(x):
        sp = vlog1pexp(x)
        # x above the threshold: sp + (x - sp) is exactly x (x - sp is exact, Sterbenz)
        return sp + cast(x > threshold) * (x - sp)

    return softplus


# --- sigmoid -----------------------------------------------------------------------------------


def vsigmoid(x):
    """1 / (1 + exp(-x)) for a float32 or float64 scalar, within 3 ulp, vectorisable (in jitted code)."""
    return 1 / (1 + np.exp(-x))


@overload(vsigmoid, jit_options=VECTOR_JIT, inline="always")
def _vsigmoid_impl(x):
    if x not in (types.float32, types.float64):
        return None
    one = np.float32(1.0) if x == types.float32 else 1.0

    def sigmoid(x):
        w = vexp(-abs(x))  # in (0, 1]
        d = one / (one + w)
        return d if x >= 0 else w * d

    return sigmoid


# --- reductions in LANES partial results -------------------------------------------------------


@njit(inline="always", **VECTOR_JIT)
def lane_sum(v, n, lanes):
    """v[0] + ... + v[n-1] with ``LANES`` partial sums (an ordered sum does not vectorise)."""
    n8 = n - n % LANES
    for j in range(LANES):
        lanes[j] = 0
    for i in range(0, n8, LANES):
        for j in range(LANES):
            lanes[j] += v[i + j]
    s = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]))
    for i in range(n8, n):
        s += v[i]
    return s


@njit(inline="always", **VECTOR_JIT)
def lane_dot(x, y, n, lanes):
    """x[0] y[0] + ... + x[n-1] y[n-1] with ``LANES`` partial sums."""
    n8 = n - n % LANES
    for j in range(LANES):
        lanes[j] = 0
    for i in range(0, n8, LANES):
        for j in range(LANES):
            lanes[j] += x[i + j] * y[i + j]
    s = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]))
    for i in range(n8, n):
        s += x[i] * y[i]
    return s


@njit(inline="always", **VECTOR_JIT)
def lane_max(v, n, lanes):
    """max(v[0], ..., v[n-1]) with ``LANES`` partial maxima; -inf for n = 0. NaN entries are
    skipped (a comparison with NaN is false), as a running ``if x > m`` maximum skips them."""
    n8 = n - n % LANES
    for j in range(LANES):
        lanes[j] = -np.inf
    for i in range(0, n8, LANES):
        for j in range(LANES):
            x = v[i + j]
            lanes[j] = x if x > lanes[j] else lanes[j]
    m = lanes[0]
    for j in range(1, LANES):
        m = lanes[j] if lanes[j] > m else m
    for i in range(n8, n):
        m = v[i] if v[i] > m else m
    return m
