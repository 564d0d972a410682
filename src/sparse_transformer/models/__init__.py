"""Model configuration, presets and the Sparse Transformer itself."""
from .config import ModelConfig
from .presets import PRESETS, DataConfig, RunConfig, TrainConfig, get_preset
from .transformer import SparseTransformer

__all__ = ["ModelConfig", "SparseTransformer", "RunConfig", "TrainConfig", "DataConfig",
           "PRESETS", "get_preset"]
