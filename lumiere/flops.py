"""FLOPs of what a function runs: torch's flop counter (`torch.utils.flop_counter`), which counts matmuls and
convolutions at 2 FLOPs a multiply-add and knows the CUDA attention kernels, plus the CPU one it does not.

On the CPU, `F.scaled_dot_product_attention` runs `aten._scaled_dot_product_flash_attention_for_cpu` (and its
backward), which torch's counter has no formula for: it counted 0, so the bench's and the eval's GFLOP, % of peak
and FLOP ratios left out every attention layer. `CPU_SDPA_FLOPS` gives those two kernels torch's own SDPA formulas,
so an attention layer counts the same on every path: the fused kernel, torch's math fallback and the plain
matmul + softmax of `kernels.attention` (the two matmuls q k^T and p v; softmax and scaling are not counted).
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count


def cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """q (n, h, l, d), k (n, h, m, d), v (n, h, m, e): 2 n h l m (d + e)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def cpu_sdpa_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                           **kwargs) -> int:
    """The gradients of q, k, v and the scores: 2.5x the forward's matmuls (torch's formula)."""
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


CPU_SDPA_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa_flop,
                  torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: cpu_sdpa_backward_flop}


def count_flops(fn) -> int:
    """FLOPs of everything `fn` runs (forward, and backward if it runs one)."""
    with FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as counter:
        fn()
    return counter.get_total_flops()
