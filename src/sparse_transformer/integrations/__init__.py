"""Adapters for other libraries' models. Each is an optional extra that the core never imports:
``sparse_transformer.integrations.hf`` needs ``pip install sparse-transformer[hf]``."""
