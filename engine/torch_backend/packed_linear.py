"""oneDNN-prepacked weights for the model's linear layers on the CPU.

torch's `F.linear` on the CPU multiplies by the weight as stored, re-blocking it inside every
call. oneDNN can reorder a weight once into its own blocked layout (what vLLM's CPU backend and
inductor's frozen graphs do), and each matmul then reads it as is. `pack_linears(model)` does
that for every nn.Linear of a model and routes its forward through the packed weight;
`unpack_linears` undoes it. The arithmetic is the same fp32 product up to summation order.

The packed copy is a snapshot: code that changes weights in place (CausalLM.load_weights) must
pack again. Only for float32 on a CPU torch built with oneDNN (`available()`).
"""

from __future__ import annotations

import torch
from torch import nn

BATCH_HINT = 64  # rows oneDNN lays the weight out for; any row count works


def available(model: nn.Module) -> bool:
    param = next(model.parameters())
    return (
        param.device.type == "cpu"
        and param.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


def _packed_forward(weight: torch.Tensor, bias: torch.Tensor | None):
    linear = torch.ops.mkldnn._linear_pointwise

    def forward(x: torch.Tensor) -> torch.Tensor:
        return linear(x, weight, bias, "none", [], "")

    return forward


@torch.no_grad()
def pack_linears(model: nn.Module) -> None:
    """Pack (or re-pack, after weights changed) every nn.Linear of `model` in place."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            packed = torch.ops.mkldnn._reorder_linear_weight(module.weight, BATCH_HINT)
            module.forward = _packed_forward(packed, module.bias)


def unpack_linears(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Linear) and "forward" in module.__dict__:
            del module.forward


def is_packed(model: nn.Module) -> bool:
    return any("forward" in m.__dict__ for m in model.modules() if isinstance(m, nn.Linear))
