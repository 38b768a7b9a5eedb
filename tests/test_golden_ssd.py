"""Golden op ssd: outputs and gradients against the recurrent form, any length, block_len-free."""

import numpy as np
import pytest

from ref import golden
from ref.mixers.ssd import ssd_recurrent, ssd_recurrent_backward

pytestmark = pytest.mark.mamba


def _arrays(rng, l=63):
    b, h, p, n = 2, 2, 3, 4
    return dict(X=rng.standard_normal((b, l, h, p)), A=-rng.uniform(size=(b, l, h)),
                B=rng.standard_normal((b, l, h, n)), C=rng.standard_normal((b, l, h, n)),
                initial_states=rng.standard_normal((b, h, p, n)))


@pytest.mark.parametrize("block_len", [1, 16, 64, 100])
def test_matches_the_recurrent_form_for_any_block_len(rng, block_len):
    arrays = _arrays(rng)
    arrays.update(dY=rng.standard_normal(arrays["X"].shape), dfinal_state=rng.standard_normal((2, 2, 3, 4)),
                  block_len=np.array(block_len))
    out = golden.run("ssd", arrays)
    Y, F, cache = ssd_recurrent(arrays["X"], arrays["A"], arrays["B"], arrays["C"],
                                initial_states=arrays["initial_states"])
    grads = ssd_recurrent_backward(arrays["dY"], arrays["dfinal_state"], cache)
    want = dict(Y=Y, final_state=F, **dict(zip(("dX", "dA", "dB", "dC", "dinitial_states"), grads)))
    assert set(out) == set(want)
    for k in want:
        np.testing.assert_allclose(out[k], want[k], rtol=1e-11, atol=1e-11, err_msg=k)


def test_bad_input(rng):
    arrays = _arrays(rng)
    with pytest.raises(ValueError, match="block_len: expected an integer >= 1, got 0"):
        golden.run("ssd", dict(arrays, block_len=np.array(0)))
    with pytest.raises(ValueError, match=r"initial_states: expected 4 axes"):
        golden.run("ssd", dict(arrays, initial_states=arrays["initial_states"][:, None]))
