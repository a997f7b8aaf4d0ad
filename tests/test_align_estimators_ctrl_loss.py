"""align CTRL calibration, the policy-gradient loss and the objective registry."""

import math

import numpy as np
import pytest
import torch
from ponder.align import OBJECTIVES, group_advantages
from ponder.align.bon import (
    bon_rl_v_weights,
    bon_rl_weights,
)
from ponder.align.ctrl import calibrate, ctrl_rewards, transform
from ponder.align.loss import policy_gradient_loss
from ponder.align.majority import majority_loo_advantages
from ponder.align.mean import mean_advantages
from ponder.align.passk import pkpo_loo_minus_one

# ---------------------------------------------------------------------------------------------
# CTRL


def test_calibration_counts_ties_half():
    ref = np.array([1.0, 2.0, 2.0, 3.0])
    assert calibrate([2.0, 0.0, 3.0, 5.0, 1.0], ref) == pytest.approx([0.5, 0.0, 0.875, 1.0, 0.125])
    # every reference set calibrated against itself averages exactly 1/2, ties or not
    for z in ([1.0, 1.0, 1.0], [0.0, 1.0, 1.0, 5.0], np.arange(7.0)):
        assert calibrate(z, z).mean() == pytest.approx(0.5, abs=1e-15)


def test_calibration_is_uniform_under_the_reference_policy():
    rng = np.random.default_rng(6)
    reference = rng.normal(size=(8, 400))  # 8 prompts, m = 400
    samples = rng.normal(size=(8, 300))  # same distribution as the reference
    c = calibrate(samples, reference)
    assert c.shape == (8, 300) and c.min() >= 0 and c.max() <= 1
    counts = np.histogram(c, bins=10, range=(0, 1))[0] / c.size
    assert np.all(np.abs(counts - 0.1) < 0.02) and abs(c.mean() - 0.5) < 0.02
    np.testing.assert_allclose(c[3], calibrate(samples[3], reference[3]))


def test_ctrl_transforms_are_monotone():
    c = np.linspace(0, 1, 11)
    for t in (0.5, 2.0, 10.0):
        bon, won = transform(c, t, "bon"), transform(c, t, "won")
        assert np.all(np.diff(bon) > 0) and np.all(np.diff(won) > 0)
        assert np.all(np.diff(bon, 2) > 0) and np.all(np.diff(won, 2) < 0)  # convex / concave
        assert bon == pytest.approx(np.exp(t * c)) and won == pytest.approx(-np.exp(-t * c))
    r = ctrl_rewards([0.0, 2.0, 9.0], [1.0, 2.0, 3.0], t=2.0)
    assert r == pytest.approx(np.exp(2.0 * np.array([0.0, 0.5, 1.0])))


def test_ctrl_errors():
    for bad in (0.0, -1.0, float("nan"), float("inf"), "3", None):
        with pytest.raises(ValueError, match="t must be"):
            transform([0.5], bad)
    with pytest.raises(ValueError, match="unknown mode"):
        transform([0.5], 1.0, "median")
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        transform([1.5], 1.0)
    with pytest.raises(ValueError, match="m >= 1"):
        calibrate([1.0], [])
    with pytest.raises(ValueError, match="must be"):
        calibrate(np.zeros((2, 3)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        calibrate([float("nan")], [1.0])


# ---------------------------------------------------------------------------------------------
# loss


def tiny_policy_logprobs(theta, tokens):
    """A context-free softmax policy over 4 tokens: log pi(token) for every position; (B, T)."""
    return torch.log_softmax(theta, dim=0)[tokens]


TOKENS = torch.tensor([[0, 2, 1, 3], [1, 1, 0, 2], [3, 0, 0, 0]])  # (B=3, T=4)
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
ADV = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)


def test_reinforce_gradient_is_minus_advantage_times_grad_logprob():
    theta = torch.tensor([0.1, -0.3, 0.2, 0.0], dtype=torch.float64, requires_grad=True)
    policy_gradient_loss(tiny_policy_logprobs(theta, TOKENS), ADV, MASK).backward()
    pi = torch.softmax(theta.detach(), dim=0)
    expected = torch.zeros(4, dtype=torch.float64)
    for b, t in MASK.nonzero().tolist():  # d log pi(x) / d theta = e_x - pi
        expected -= ADV[b] * (torch.nn.functional.one_hot(TOKENS[b, t], 4) - pi)
    torch.testing.assert_close(theta.grad, expected / MASK.sum())


def test_ppo_at_ratio_one_equals_reinforce():
    lp = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    policy_gradient_loss(lp, ADV, MASK).backward()
    reinforce = lp.grad.clone()
    lp.grad = None
    policy_gradient_loss(lp, ADV, MASK, old_logprobs=lp.detach().clone()).backward()
    torch.testing.assert_close(lp.grad, reinforce)


def test_ppo_clipping_zeroes_gradients_outside_the_trust_region():
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    old = torch.zeros(4, 1, dtype=torch.float64)
    # ratios 1.5, 0.5, 0.5, 1.5 with eps 0.2
    lp = torch.log(torch.tensor([[1.5], [0.5], [0.5], [1.5]], dtype=torch.float64)).requires_grad_()
    mask = torch.ones(4, 1, dtype=torch.bool)
    policy_gradient_loss(lp, adv, mask, old_logprobs=old, clip_eps=0.2).backward()
    g = lp.grad[:, 0]
    assert g[0] == 0 and g[2] == 0  # A > 0 past 1 + eps, A < 0 below 1 - eps: clipped
    assert g[1] == pytest.approx(-1.0 * 0.5 / 4) and g[3] == pytest.approx(1.0 * 1.5 / 4)


def test_mask_excludes_tokens():
    lp = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    loss = policy_gradient_loss(lp, ADV, MASK)
    loss.backward()
    assert torch.all(lp.grad[~MASK] == 0) and torch.all(lp.grad[MASK] != 0)
    junk = lp.detach().clone()
    junk[~MASK] = float("nan")  # padding log-probs never reach the loss
    assert policy_gradient_loss(junk, ADV, MASK).item() == pytest.approx(loss.item())
    empty = torch.zeros_like(MASK)
    assert policy_gradient_loss(lp, ADV, empty).item() == 0.0


def test_kl_term_vanishes_at_the_reference_and_is_k3_elsewhere():
    lp = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    base = policy_gradient_loss(lp, ADV, MASK)
    (base_grad,) = torch.autograd.grad(base, lp)
    same = policy_gradient_loss(lp, ADV, MASK, ref_logprobs=lp.detach(), kl_coef=1.0)
    (same_grad,) = torch.autograd.grad(same, lp)
    assert same.item() == pytest.approx(base.item())
    torch.testing.assert_close(same_grad, base_grad)
    ref = lp.detach() + 0.3
    with_kl = policy_gradient_loss(lp, ADV, MASK, ref_logprobs=ref, kl_coef=0.5)
    d = 0.3
    assert with_kl.item() == pytest.approx(base.item() + 0.5 * (math.exp(d) - d - 1))


def test_loss_errors():
    lp = torch.zeros(2, 3)
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="per sequence"):
        policy_gradient_loss(lp, torch.zeros(3), mask)
    with pytest.raises(ValueError, match="mask must match"):
        policy_gradient_loss(lp, torch.zeros(2), mask[:, :2])
    with pytest.raises(ValueError, match="needs ref_logprobs"):
        policy_gradient_loss(lp, torch.zeros(2), mask, kl_coef=0.1)
    with pytest.raises(ValueError, match="clip_eps"):
        policy_gradient_loss(lp, torch.zeros(2), mask, old_logprobs=lp, clip_eps=0.0)


# ---------------------------------------------------------------------------------------------
# registry


def test_registry_dispatches_to_the_estimators():
    r = np.array([0.0, 1.0, 0.0, 1.0])
    answers = ["3", "4", "3", "4"]
    assert set(OBJECTIVES) == {"mean", "passk", "majk", "bon_rl", "bon_rl_v"}
    assert group_advantages("mean", r) == pytest.approx(mean_advantages(r, "loo"))
    assert group_advantages("passk", r, k=2) == pytest.approx(pkpo_loo_minus_one(r, 2))
    assert group_advantages("passk", r) == pytest.approx(pkpo_loo_minus_one(r, 4))
    assert group_advantages("majk", r, answers=answers) == pytest.approx(
        majority_loo_advantages(answers, r)
    )
    assert group_advantages("bon_rl", r) == pytest.approx(bon_rl_weights(r))
    scores = [0.1, 0.2, 0.9, 0.3]
    assert group_advantages("bon_rl_v", r, scores=scores) == pytest.approx(bon_rl_v_weights(scores))
    with pytest.raises(ValueError, match="unknown objective"):
        group_advantages("pass@k", r)
    with pytest.raises(ValueError, match="needs the extracted answers"):
        group_advantages("majk", r)
    with pytest.raises(ValueError, match="exactly k"):
        group_advantages("majk", r, k=2, answers=answers)
    with pytest.raises(ValueError, match="needs verifier scores"):
        group_advantages("bon_rl_v", r)
