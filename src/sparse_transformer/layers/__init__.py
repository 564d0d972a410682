"""nn.Modules: sparse self-attention with the paper's integration modes, and a stand-in for
``torch.nn.MultiheadAttention`` that takes any pattern."""
from .attention import MODES, SparseSelfAttention
from .mha import SparseMultiheadAttention

__all__ = ["SparseSelfAttention", "SparseMultiheadAttention", "MODES"]
