"""Golden op ``lstm``: one LSTM layer over a sequence (ref.mixers.rnn.lstm).

Mirrors PyTorch's ``torch.nn.LSTM(input_size=I, hidden_size=H, num_layers=1, bias=True,
batch_first=True)``: ``y, (h_n, c_n) = lstm(x, (h0[None], c0[None]))`` with the module's
``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``; here ``hT = h_n[0]`` and
``cT = c_n[0]``. Gate rows i, f, g, o. ``rnn_cases`` also serves the ``gru`` op.
"""

import numpy as np

from ref.golden.cases import Case
from ref.golden.registry import GoldenOp, Tensor, register
from ref.mixers.rnn import lstm, lstm_backward

_GRADS = ("dx", "dh0", "dc0", "dweight_ih", "dweight_hh", "dbias_ih", "dbias_hh")


def _forward(inputs, options):
    y, hT, cT, cache = lstm(
        inputs["x"], inputs.get("h0"), inputs.get("c0"), inputs["weight_ih"], inputs["weight_hh"],
        inputs.get("bias_ih"), inputs.get("bias_hh"),
    )

    def backward(cot):
        return dict(zip(_GRADS, lstm_backward(cot["dy"], cot["dhT"], cot["dcT"], cache)))

    return {"y": y, "hT": hT, "cT": cT}, backward


def preactivation_bound(arrays) -> float:
    """An upper bound on |a| over every gate pre-activation a = x W_ih^T + b_ih + h W_hh^T + b_hh.

    |h| <= 1 (h = o tanh(c), or a convex mix of tanh values for the GRU, after the first step; the
    initial state is drawn the same way), so |h W_hh^T|_j <= sum_k |W_hh[j, k]| max(1, |h0|).
    The GRU's r * gh_n is bounded the same way, r being in (0, 1)."""
    h_max = max(1.0, float(np.abs(arrays["h0"]).max()) if "h0" in arrays else 1.0)
    hidden = np.abs(arrays["weight_hh"]).sum(axis=1) * h_max  # (G H,)
    bias = sum(np.abs(arrays[b]) for b in ("bias_ih", "bias_hh") if b in arrays)
    inp = np.abs(arrays["x"]) @ np.abs(arrays["weight_ih"]).T  # (B, T, G H)
    return float((inp + hidden + bias).max())


def rnn_cases(rng, gates: int, cell_state: bool):
    """The golden cases of ``lstm`` (gates = 4, a cell state c) and ``gru`` (gates = 3).

    Weights as PyTorch initialises them, U(-1/sqrt(H), 1/sqrt(H)), so the recurrence neither
    explodes nor saturates; one case multiplies the input weights by 8 to drive the gates into
    saturation (sigmoid near 0 and 1, where a kernel's approximate sigmoid or tanh shows). T = 1, 63
    and 500; I and H not powers of two; with and without initial states, biases (PyTorch's
    bias=False) and the final-state cotangents. ``length`` = T + I + H (the longest sums: the
    matmuls and the T-step sums of the weight gradients), ``exponent`` = the bound on the gate
    pre-activations, whose rounding error each sigmoid and tanh carries into the result.
    """
    plan = [  # name, B, T, I, H, input-weight gain, initial states, biases, final-state cotangents
        ("T1", 2, 1, 5, 3, 1.0, True, True, True),
        ("T63_h0", 2, 63, 6, 10, 1.0, True, True, False),
        ("T63_saturated", 1, 63, 3, 5, 8.0, False, True, True),
        ("T500_h0", 1, 500, 5, 6, 1.0, True, True, True),
        ("T500_nobias", 1, 500, 3, 12, 1.0, False, False, True),
    ]
    out = []
    for name, B, T, I, H, gain, with_h0, with_bias, final in plan:
        k = 1.0 / np.sqrt(H)
        arrays = {
            "x": rng.standard_normal((B, T, I)),  # (B, T, I)
            "weight_ih": gain * rng.uniform(-k, k, (gates * H, I)),  # (G H, I)
            "weight_hh": rng.uniform(-k, k, (gates * H, H)),  # (G H, H)
        }
        if with_bias:
            arrays["bias_ih"] = rng.uniform(-k, k, gates * H)  # (G H,)
            arrays["bias_hh"] = rng.uniform(-k, k, gates * H)  # (G H,)
        if with_h0:
            arrays["h0"] = rng.uniform(-1, 1, (B, H))  # (B, H), in the range of tanh
            if cell_state:
                arrays["c0"] = rng.standard_normal((B, H))  # (B, H)
        arrays["dy"] = rng.standard_normal((B, T, H))
        if final:
            arrays["dhT"] = rng.standard_normal((B, H))
            if cell_state:
                arrays["dcT"] = rng.standard_normal((B, H))
        states = "h0, c0" if cell_state else "h0"
        finals = "dhT, dcT" if cell_state else "dhT"
        description = (
            f"B={B} T={T} I={I} H={H}; weights U(-1/sqrt(H), 1/sqrt(H))"
            f"{f', input weights x{gain:g} (saturated gates)' if gain != 1.0 else ''}; "
            f"{'initial ' + states if with_h0 else 'no initial state'}; {'biases' if with_bias else 'no biases'}; "
            f"{'cotangents dy and ' + finals if final else 'cotangent dy only'}"
        )
        out.append(Case(name, description, arrays, length=T + I + H, exponent=preactivation_bound(arrays)))
    return out


register(
    GoldenOp(
        name="lstm",
        mirrors="torch.nn.LSTM(batch_first=True, num_layers=1), torch/nn/modules/rnn.py (PyTorch 2.x), "
        "the equations of its documentation",
        layout="batch first: x (B, T, I); y (B, T, H); h0, c0, hT, cT (B, H); weight_ih (4H, I), "
        "weight_hh (4H, H), bias_ih, bias_hh (4H,)",
        inputs=(
            Tensor("x", "(B, T, I)", "inputs"),
            Tensor("h0", "(B, H)", "initial hidden state; zeros if absent", optional=True),
            Tensor("c0", "(B, H)", "initial cell state; zeros if absent", optional=True),
            Tensor("weight_ih", "(4H, I)", "rows [W_ii; W_if; W_ig; W_io] (weight_ih_l0)"),
            Tensor("weight_hh", "(4H, H)", "rows [W_hi; W_hf; W_hg; W_ho] (weight_hh_l0)"),
            Tensor("bias_ih", "(4H,)", "b_ii, b_if, b_ig, b_io; absent: bias=False", optional=True),
            Tensor("bias_hh", "(4H,)", "b_hi, b_hf, b_hg, b_ho; absent: bias=False", optional=True),
        ),
        outputs=(
            Tensor("y", "(B, T, H)", "every hidden state h_t"),
            Tensor("hT", "(B, H)", "the final hidden state (h_n[0] of PyTorch)"),
            Tensor("cT", "(B, H)", "the final cell state (c_n[0] of PyTorch)"),
        ),
        forward=_forward,
        notes="i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of x W_ih^T + b_ih + h W_hh^T + b_hh (row blocks); "
        "c_t = f c_{t-1} + i g;  h_t = o tanh(c_t).",
        reference="torch.nn.LSTM",
        state_layout="h and c (B, H) each; PyTorch's h_0, c_0, h_n, c_n are (num_layers * D, B, H) = (1, B, H)",
        conventions=(
            "gate rows stacked i, f, g, o (PyTorch, cuDNN, Keras's i, f, c, o); TensorFlow 1's LSTMCell splits "
            "i, j, f, o and adds forget_bias=1.0 to f: permute the row blocks and fold the bias in",
            "two biases, both added: a = x W_ih^T + b_ih + h W_hh^T + b_hh; a one-bias kernel uses "
            "b = b_ih + b_hh, whose gradient equals dbias_ih and dbias_hh",
            "the weights multiply from the right transposed: x W_ih^T, weight_ih is (4H, I), not (I, 4H)",
            "h0, c0, hT, cT are (B, H): PyTorch's states are (1, B, H) even with batch_first=True (h0[None], "
            "h_n[0]); absent h0 or c0 means zeros",
            "y holds every h_t, so y[:, -1] == hT: a cotangent on both adds (dy[:, -1] + dhT)",
            "no peepholes, no projection (proj_size=0), no dropout; one layer, one direction",
        ),
        cases=lambda rng: rnn_cases(rng, gates=4, cell_state=True),
    )
)
