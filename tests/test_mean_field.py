"""jaxnet.mean_field against simulated wide random tanh networks (numpy, two networks
averaged) and against values known in closed form."""

import math

import numpy as np
import pytest

from jaxnet import mean_field as mf

BIAS_VARIANCE = 0.05


def _simulate(weight_variance, width, depth, seed=0, nets=2, start_correlation=0.6):
    """Per layer: mean squared pre-activation of one input, correlation of two inputs'
    pre-activations, and the ratio of squared backpropagated gradients layer to layer."""
    rng = np.random.default_rng(seed)
    qs, cs, ratios = [], [], []
    for _ in range(nets):
        x1 = rng.normal(size=width)
        x2 = start_correlation * x1 + math.sqrt(1 - start_correlation ** 2) * rng.normal(
            size=width)
        zs, ws = [np.stack([x1, x2])], []
        for _ in range(depth):
            w = rng.normal(size=(width, width)) * math.sqrt(weight_variance / width)
            ws.append(w)
            zs.append(np.tanh(zs[-1]) @ w.T + rng.normal(size=width) * math.sqrt(BIAS_VARIANCE))
        qs.append([np.mean(z[0] ** 2) for z in zs])
        cs.append([np.mean(z[0] * z[1]) / math.sqrt(np.mean(z[0] ** 2) * np.mean(z[1] ** 2))
                   for z in zs])
        delta, ratio = rng.normal(size=width), []
        for layer in range(depth - 1, 0, -1):  # dL/dz^l = phi'(z^l) * (W^l)^T dL/dz^{l+1}
            new = (1 - np.tanh(zs[layer][0]) ** 2) * (ws[layer].T @ delta)
            ratio.append(np.sum(new ** 2) / np.sum(delta ** 2))
            delta = new
        ratios.append(ratio)
    return np.mean(qs, 0), np.mean(cs, 0), np.mean(ratios, 0)


# ordered: 20 layers; chaotic (xi_c = 12, slower to reach c*): 40 layers
@pytest.mark.parametrize("weight_variance, width, depth", [(1.2, 2000, 20), (2.5, 2000, 40)])
def test_fixed_points_and_chi_1_match_a_simulated_wide_network(weight_variance, width, depth):
    q, c, ratio = _simulate(weight_variance, width, depth)
    q_star = mf.length_fixed_point("tanh", weight_variance, BIAS_VARIANCE)
    c_star = mf.correlation_fixed_point("tanh", weight_variance, BIAS_VARIANCE)
    chi = mf.chi_1("tanh", weight_variance, BIAS_VARIANCE)
    # finite width: fluctuations of about 1/sqrt(width) per layer, averaged over layers
    assert q[-8:].mean() == pytest.approx(q_star, rel=0.04)
    assert c[-4:].mean() == pytest.approx(c_star, abs=0.03)
    assert ratio[:10].mean() == pytest.approx(chi, rel=0.04)
    assert (chi < 1) == (weight_variance < mf.critical_weight_variance("tanh", BIAS_VARIANCE))


def test_depth_scale_is_the_decay_length_of_correlations_in_the_ordered_phase():
    """1 - c^l falls as exp(-l / xi_c): the slope of log(1 - c^l) over layers 3-11."""
    _, c, _ = _simulate(1.2, 2000, 12)
    layers = np.arange(3, 12)
    measured = -1 / np.polyfit(layers, np.log(1 - c[layers]), 1)[0]
    assert measured == pytest.approx(mf.depth_scale("tanh", 1.2, BIAS_VARIANCE), rel=0.1)


def test_closed_forms():
    # sigma_b = 0: q* = 0 in the ordered phase and chi_1 = sigma_w^2 phi'(0)^2 (= sigma_w^2
    # for tanh), so the edge is sigma_w^2 = 1 (the iteration nears q* = 0 only as 1/l there)
    assert mf.critical_weight_variance("tanh", 0.0) == pytest.approx(1.0, abs=1e-3)
    assert mf.chi_1("tanh", 0.5, 0.0) == pytest.approx(0.5, rel=1e-6)
    # ReLU: chi_1 = sigma_w^2 / 2 at any q, so the edge is He's 2
    assert mf.critical_weight_variance("relu", 0.0) == pytest.approx(2.0, rel=1e-6)
    assert mf.chi_1("relu", 1.5, 0.0) == pytest.approx(0.75, rel=1e-6)
    # a linear network: q* = sigma_b^2 / (1 - sigma_w^2), chi_1 = sigma_w^2
    assert mf.length_fixed_point(lambda v: v, 0.5, 0.1) == pytest.approx(0.2, rel=1e-9)
    # the depth scale diverges at the edge, from both sides
    edge = mf.critical_weight_variance("tanh", BIAS_VARIANCE)
    near = [mf.depth_scale("tanh", edge * f, BIAS_VARIANCE) for f in (0.9, 0.99, 1.01, 1.1)]
    assert near[1] > 5 * near[0] and near[2] > 5 * near[3]
    assert mf.correlation_fixed_point("tanh", edge * 0.99, BIAS_VARIANCE) == 1.0
    assert mf.correlation_fixed_point("tanh", edge * 1.1, BIAS_VARIANCE) < 1.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="softmax is not elementwise"):
        mf.chi_1("softmax", 1.0, 0.0)
    with pytest.raises(ValueError, match="activation: unknown"):
        mf.chi_1("tanhh", 1.0, 0.0)
    with pytest.raises(TypeError, match="activation: expected a name"):
        mf.chi_1(3, 1.0, 0.0)
    with pytest.raises(ValueError, match="weight_variance: expected a finite number > 0"):
        mf.depth_scale("tanh", 0.0, 0.05)
    with pytest.raises(ValueError, match="bias_variance: expected a finite number >= 0"):
        mf.depth_scale("tanh", 1.0, -0.1)
    with pytest.raises(ValueError, match="the length map diverges"):
        mf.length_fixed_point("relu", 3.0, 0.0)
    with pytest.raises(ValueError, match="bounds: chi_1 - 1 must change sign"):
        mf.critical_weight_variance("tanh", 0.05, bounds=(2.0, 3.0))
