"""nn.Modules: sparse self-attention with the paper's integration modes."""
from .attention import MODES, SparseSelfAttention

__all__ = ["SparseSelfAttention", "MODES"]
