"""sparse-transformer: the Sparse Transformer (Child et al. 2019) and sparse attention in PyTorch."""
from . import patterns
from .ops import sparse_attention

__version__ = "0.1.0"
__all__ = ["patterns", "sparse_attention", "__version__"]
