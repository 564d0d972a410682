"""The pattern base class: a pattern is one element-wise predicate, everything else is derived.

A pattern answers ``allowed(q, k, h)`` for integer tensors of query positions, key positions and
head indices that broadcast against each other. Causality is not part of the predicate: it is
applied on top (``k <= q``) by ``mask`` / ``block_layout`` and by every attention backend, so the
same pattern serves causal and bidirectional models.

Derived forms (dense masks for tests and plots, block layouts for kernels) live in ``layout.py``
and are computed from the predicate in chunks, so no n x n tensor is built for them.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, fields

import torch


def check_positive_int(name: str, value, *, allow_zero: bool = False) -> int:
    """Validate an integer pattern parameter and return it; raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else ">= 1"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


_BY_TOKEN: "weakref.WeakValueDictionary[str, Pattern]" = weakref.WeakValueDictionary()


def _register(pattern: "Pattern") -> str:
    token = repr(pattern)
    object.__setattr__(pattern, "_token", token)
    _BY_TOKEN.setdefault(token, pattern)
    return token


def by_token(token: str) -> "Pattern":
    """The live pattern whose ``token`` this is (see ``Pattern.token``)."""
    try:
        return _BY_TOKEN[token]
    except KeyError:
        raise KeyError(f"no live pattern has token {token!r}") from None


@dataclass(frozen=True)
class Pattern:
    """Base class of every attention pattern.

    Subclasses are frozen dataclasses (hashable, so derived layouts can be cached by value) and
    implement ``allowed``. Patterns that vary by head set ``per_head = True`` and read ``h``.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("__post_init__")
        if own is not None and not getattr(own, "_registers", False):
            def __post_init__(self, _own=own):
                _own(self)
                _register(self)

            __post_init__._registers = True
            cls.__post_init__ = __post_init__

    def __post_init__(self):
        _register(self)

    def __setstate__(self, state):  # unpickled patterns are registered like constructed ones
        self.__dict__.update(state)
        _register(self)

    @property
    def token(self) -> str:
        """A string naming this pattern by value (its repr), fixed at construction.

        torch.compile reads it as a constant where it cannot turn the pattern object itself into
        one (frozen dataclasses, torch 2.11); ``by_token`` maps it back to the pattern.
        """
        return self.__dict__.get("_token") or _register(self)

    @property
    def per_head(self) -> bool:
        return False

    @property
    def traceable(self) -> bool:
        """True when ``allowed`` is element-wise arithmetic on its arguments alone: no host
        synchronisation and no tensors built from Python data. FlexAttention then uses the
        predicate itself as its mask function; other patterns go through mask tables."""
        return False

    @property
    def depends_on_difference(self) -> bool:
        """True when ``allowed(q, k, h)`` depends on ``q - k`` only (and not on ``h``).

        Layouts of such patterns are derived from the predicate on the 2n - 1 differences
        instead of the n x n pairs (see ``layout.py``); tests hold them against the generic form.
        """
        return False

    @property
    def name(self) -> str:
        args = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"{type(self).__name__}({args})"

    def allowed(self, q: torch.Tensor, k: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement allowed()")

    # -- derived forms -------------------------------------------------------------------------
    def mask(self, seq_len: int, num_heads: int = 1, causal: bool = True,
             device: torch.device | str | None = None) -> torch.Tensor:
        """Dense bool mask of shape (num_heads, seq_len, seq_len). For tests and plots only."""
        from .layout import dense_mask

        return dense_mask(self, seq_len, num_heads, causal, device)

    def block_layout(self, seq_len: int, block: int, num_heads: int = 1, causal: bool = True):
        """Block layout derived from the predicate (see ``layout.BlockLayout``)."""
        from .layout import block_layout

        return block_layout(self, seq_len, block, num_heads, causal)

    def density(self, seq_len: int, num_heads: int = 1, causal: bool = True) -> float:
        """Fraction of the (causal) n x n pairs that are allowed."""
        from .layout import count_pairs

        pairs = count_pairs(self, seq_len, num_heads, causal)
        total = num_heads * (seq_len * (seq_len + 1) // 2 if causal else seq_len * seq_len)
        return pairs / total

    def structure(self):
        """What backends may assume beyond the predicate (``structure.Structure``): the one hook
        they ask for their shortcuts instead of testing the pattern's class. The default,
        "generic", claims nothing; patterns with a known shape override this, and tests hold
        every answer equal to the predicate."""
        from .structure import GENERIC

        return GENERIC

    def parts(self) -> list["Pattern"]:
        """Disjoint sub-patterns whose union is this pattern (used to pick execution plans).

        The default is the pattern itself; patterns with a cheaper decomposition override this.
        Tests hold every decomposition against the predicate.
        """
        return [self]

    def __or__(self, other: "Pattern") -> "Pattern":
        from .union import Union

        return Union((self, other))
