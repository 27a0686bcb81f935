"""FLOP counting (`lumiere.flops`): an attention layer counts its attention on the CPU's fused SDPA kernel too."""
import torch

from lumiere.flops import count_flops
from lumiere.kernels import attention_reference
from lumiere.models.layers import Attention


def test_an_attention_layer_counts_its_projections_and_its_attention():
    n, l, m, dim, head_dim, context_dim = 2, 40, 8, 64, 16, 32
    layer = Attention(dim, head_dim, context_dim)
    x, context = torch.randn(n, l, dim), torch.randn(n, m, context_dim)
    heads = dim // head_dim
    projections = 2 * n * l * dim * dim + 2 * n * m * context_dim * 2 * dim + 2 * n * l * dim * dim  # q, kv, out
    attention = 2 * n * heads * l * m * head_dim * 2  # q k^T and p v
    with torch.no_grad():
        assert count_flops(lambda: layer(x, context)) == projections + attention


def test_the_fused_kernel_counts_what_the_plain_formula_counts():
    q, k, v = (torch.randn(2, 4, 64, 32) for _ in range(3))
    fused = count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    assert fused == count_flops(lambda: attention_reference(q, k, v)) == 2 * 2 * 4 * 64 * 64 * (32 + 32)
