"""A dict with a bound: the least recently used entry goes when a new one would exceed it.

Every module-level cache of the backends (plans, block masks, compiled launches) is one of these
or a ``functools.lru_cache`` with a ``maxsize``, so a process that sees many lengths or patterns
keeps at most a fixed number of entries per cache. The bound counts entries, not bytes; each
cache states its bound where it is defined.

Evicting an entry never breaks a computation in flight: callers that need an entry again later
(an autograd backward, a custom op inside a compiled graph) either hold a reference to the value
itself or rebuild it from the key on a miss.
"""
from __future__ import annotations

from collections import OrderedDict


class LRUCache(OrderedDict):
    """``get`` and ``[]`` mark an entry as used; setting one past ``maxsize`` evicts the oldest."""

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        super().__init__()
        self.maxsize = maxsize

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def get(self, key, default=None):
        try:
            value = super().__getitem__(key)
        except KeyError:
            return default
        self.move_to_end(key)
        return value

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)
