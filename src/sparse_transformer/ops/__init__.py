"""Attention computed: the reference, the blocked PyTorch backend, and the dispatcher."""
from .blocked import blocked_attention
from .dispatch import BACKENDS, choose_backend, force_backend, register_backend, sparse_attention
from .merge import merge_partials
from .reference import reference_attention

__all__ = ["sparse_attention", "reference_attention", "blocked_attention", "merge_partials",
           "force_backend", "register_backend", "choose_backend", "BACKENDS"]
