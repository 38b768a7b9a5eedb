"""Golden op ``gru``: one GRU layer over a sequence (ref.mixers.rnn.gru).

Mirrors PyTorch's ``torch.nn.GRU(input_size=I, hidden_size=H, num_layers=1, bias=True,
batch_first=True)``: ``y, h_n = gru(x, h0[None])`` with the module's ``weight_ih_l0``,
``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``; here ``hT = h_n[0]``. Gate rows r, z, n, and the
reset gate applied to the hidden side after its matmul and bias: r * (W_hn h + b_hn).
"""

from ref.golden.lstm import rnn_cases
from ref.golden.registry import GoldenOp, Tensor, register
from ref.mixers.rnn import gru, gru_backward

_GRADS = ("dx", "dh0", "dweight_ih", "dweight_hh", "dbias_ih", "dbias_hh")


def _forward(inputs, options):
    y, hT, cache = gru(
        inputs["x"], inputs.get("h0"), inputs["weight_ih"], inputs["weight_hh"],
        inputs.get("bias_ih"), inputs.get("bias_hh"),
    )

    def backward(cot):
        return dict(zip(_GRADS, gru_backward(cot["dy"], cot["dhT"], cache)))

    return {"y": y, "hT": hT}, backward


register(
    GoldenOp(
        name="gru",
        mirrors="torch.nn.GRU(batch_first=True, num_layers=1), torch/nn/modules/rnn.py (PyTorch 2.x), "
        "the equations of its documentation",
        layout="batch first: x (B, T, I); y (B, T, H); h0, hT (B, H); weight_ih (3H, I), weight_hh (3H, H), "
        "bias_ih, bias_hh (3H,)",
        inputs=(
            Tensor("x", "(B, T, I)", "inputs"),
            Tensor("h0", "(B, H)", "initial hidden state; zeros if absent", optional=True),
            Tensor("weight_ih", "(3H, I)", "rows [W_ir; W_iz; W_in] (weight_ih_l0)"),
            Tensor("weight_hh", "(3H, H)", "rows [W_hr; W_hz; W_hn] (weight_hh_l0)"),
            Tensor("bias_ih", "(3H,)", "b_ir, b_iz, b_in; absent: bias=False", optional=True),
            Tensor("bias_hh", "(3H,)", "b_hr, b_hz, b_hn; absent: bias=False", optional=True),
        ),
        outputs=(
            Tensor("y", "(B, T, H)", "every hidden state h_t"),
            Tensor("hT", "(B, H)", "the final hidden state (h_n[0] of PyTorch)"),
        ),
        forward=_forward,
        notes="r = sigmoid(W_ir x + b_ir + W_hr h + b_hr); z = sigmoid(W_iz x + b_iz + W_hz h + b_hz); "
        "n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); h_t = (1 - z) n + z h_{t-1}.",
        reference="torch.nn.GRU",
        state_layout="h (B, H); PyTorch's h_0, h_n are (num_layers * D, B, H) = (1, B, H)",
        conventions=(
            "gate rows stacked r, z, n (PyTorch, cuDNN); Keras's GRU stacks z, r, h: permute the row blocks",
            "the reset gate multiplies the hidden side after its matmul and bias: n = tanh(W_in x + b_in + "
            "r * (W_hn h + b_hn)) (PyTorch, cuDNN, Keras reset_after=True); the 2014 paper and Keras "
            "reset_after=False use W_hn (r * h), a different function",
            "b_hn cannot be folded into b_in (r multiplies it); b_hr, b_hz can: a kernel with one bias for r and z "
            "uses b_ir + b_hr, whose gradient equals dbias_ih and dbias_hh on those rows",
            "h_t = (1 - z) n + z h_{t-1}: z keeps the old state (some texts swap z and 1 - z)",
            "the weights multiply from the right transposed: x W_ih^T, weight_ih is (3H, I), not (I, 3H)",
            "h0, hT are (B, H): PyTorch's states are (1, B, H) even with batch_first=True (h0[None], h_n[0]); "
            "absent h0 means zeros; y[:, -1] == hT, so cotangents on both add",
        ),
        cases=lambda rng: rnn_cases(rng, gates=3, cell_state=False),
    )
)
