"""Token-level policy-gradient loss for the per-sequence advantages the align estimators return.

The advantage A_b of sequence b (from mean, passk, majority, bon or ctrl) is broadcast to its
tokens. With lp = log pi_theta(token | prefix) of the sampled tokens:

- REINFORCE (old_logprobs is None):  loss_bt = -A_b lp_bt, whose gradient is
  -A_b grad log pi(y_b) summed over the tokens: the estimators' sum_i A_i grad log pi(y_i).
- PPO clipped surrogate (old_logprobs given, the sampling policy's log-probs): with
  ratio = exp(lp - old),  loss_bt = -min(ratio A_b, clip(ratio, 1 - eps, 1 + eps) A_b).
  At ratio == 1 its gradient equals REINFORCE's; outside the trust region on the side the
  advantage pushes towards, the clipped branch is active and the token's gradient is zero.
- KL penalty to a frozen reference (kl_coef > 0, ref_logprobs given): kl_coef times the
  "k3" estimator (Schulman, "Approximating KL divergence", 2020), with d = ref - lp,
      k3 = exp(d) - d - 1 >= 0,
  an unbiased per-token estimate of KL(pi_theta || pi_ref) for tokens sampled from pi_theta
  (from the old policy under PPO, the usual GRPO approximation). It and its gradient vanish
  where ref == lp.

The result is the mean over unmasked tokens of the whole batch (each token weighs the same,
so long sequences weigh more than short ones). An all-False mask gives 0 rather than NaN,
without a host sync. This module is the only torch code in align; it never sees the engine.
"""

from __future__ import annotations

import torch


def _check(logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, **others) -> None:
    if logprobs.dim() != 2:
        raise ValueError(f"logprobs must be (B, T), got {tuple(logprobs.shape)}")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(
            f"advantages must be per sequence, (B,) = {tuple(logprobs.shape[:1])}, "
            f"got {tuple(advantages.shape)}"
        )
    for name, t in {"mask": mask, **others}.items():
        if t is not None and t.shape != logprobs.shape:
            raise ValueError(
                f"{name} must match logprobs {tuple(logprobs.shape)}, got {tuple(t.shape)}"
            )


def policy_gradient_loss(
    logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    old_logprobs: torch.Tensor | None = None,
    ref_logprobs: torch.Tensor | None = None,
    clip_eps: float = 0.2,
    kl_coef: float = 0.0,
) -> torch.Tensor:
    """Scalar loss to minimise; see the module docstring.

    logprobs (B, T): log-probs of the sampled tokens under the policy being trained.
    advantages (B,): one advantage per sequence. mask (B, T): True (or 1) on response tokens.
    old_logprobs, ref_logprobs (B, T): sampling-policy and reference log-probs (no gradient).
    """
    _check(logprobs, advantages, mask, old_logprobs=old_logprobs, ref_logprobs=ref_logprobs)
    if not clip_eps > 0:
        raise ValueError(f"clip_eps must be > 0, got {clip_eps}")
    if kl_coef < 0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
    if kl_coef > 0 and ref_logprobs is None:
        raise ValueError("kl_coef > 0 needs ref_logprobs (the reference policy's log-probs)")

    adv = advantages.detach().to(logprobs.dtype)[:, None]  # (B, 1), broadcast over tokens
    if old_logprobs is None:
        per_token = -adv * logprobs  # (B, T)
    else:
        ratio = torch.exp(logprobs - old_logprobs.detach())  # (B, T)
        clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
        per_token = -torch.minimum(ratio * adv, clipped * adv)  # (B, T)
    if kl_coef > 0:
        d = ref_logprobs.detach() - logprobs  # (B, T)
        per_token = per_token + kl_coef * (torch.exp(d) - d - 1.0)

    keep = mask.bool()  # (B, T); `where`, not a product, so junk log-probs on padding stay out
    total = torch.where(keep, per_token, torch.zeros_like(per_token)).sum()
    return total / keep.sum().clamp_min(1).to(logprobs.dtype)
