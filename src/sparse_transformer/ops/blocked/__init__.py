"""The pure-PyTorch blocked backend (``backend.py``) and its execution plans (``plans.py``).

Re-exports the public names that ``sparse_transformer.ops.blocked`` had as a single module.
"""
from .backend import CHUNK_FRACTION_OF_Q, CHUNK_SCORES, blocked_attention
from .plans import Plan, Task, build_plan, choose_block

__all__ = ["blocked_attention", "CHUNK_SCORES", "CHUNK_FRACTION_OF_Q",
           "Plan", "Task", "build_plan", "choose_block"]
