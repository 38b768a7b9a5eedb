"""Recurrent networks with hand-written backprop through time, in PyTorch's conventions.

* ``rnn``: the vanilla (Elman) RNN, tanh or relu, ``h_t = tanh(x_t W_ih^T + b_ih + h W_hh^T + b_hh)``;
* ``lstm``: the LSTM, gate rows i, f, g, o (``torch.nn.LSTM``);
* ``gru``: the GRU, gate rows r, z, n, with ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``
  (``torch.nn.GRU``);
* ``stacked_rnn``: any of them stacked in layers, one or both directions, with PyTorch's
  parameter names (``weight_ih_l0``, ``weight_hh_l1_reverse``, ...).

Each cell comes as a step pair and a sequence pair, both pure functions:

    h_t, state_t, cache = lstm_step(x_t, (h, c), params)
    dx_t, (dh, dc), dparams = lstm_step_backward(dh_t, (dh_next, dc_next), cache)
    y, hT, cT, cache = lstm(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
    dx, dh0, dc0, dweight_ih, dweight_hh, dbias_ih, dbias_hh = lstm_backward(dy, dhT, dcT, cache)

The sequence form loops the step. Shapes, batch first: x (B, T, I), y (B, T, H), states (B, H),
weights (G H, I) and (G H, H) with G = 1, 4, 3 gate blocks. Every backward takes
``truncation=k`` for truncated backprop through time: the gradient carried through the state is
cut every k steps (see ``ref.mixers.rnn._sequence``).
"""

from ref.mixers.rnn.gru import gru, gru_backward, gru_step, gru_step_backward
from ref.mixers.rnn.lstm import lstm, lstm_backward, lstm_step, lstm_step_backward
from ref.mixers.rnn.rnn import rnn, rnn_backward, rnn_step, rnn_step_backward
from ref.mixers.rnn.stack import CELLS, param_names, stacked_rnn, stacked_rnn_backward

__all__ = [
    "CELLS",
    "gru",
    "gru_backward",
    "gru_step",
    "gru_step_backward",
    "lstm",
    "lstm_backward",
    "lstm_step",
    "lstm_step_backward",
    "param_names",
    "rnn",
    "rnn_backward",
    "rnn_step",
    "rnn_step_backward",
    "stacked_rnn",
    "stacked_rnn_backward",
]
