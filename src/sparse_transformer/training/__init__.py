"""Training: the trainer, checkpoints and evaluation."""
from .evaluate import bits_per_byte, dynamic_bits_per_byte, ppmd_bits_per_byte
from .trainer import Trainer, TrainingDiverged, config_from_dict, config_to_dict

__all__ = ["Trainer", "TrainingDiverged", "bits_per_byte", "dynamic_bits_per_byte", "ppmd_bits_per_byte",
           "config_to_dict", "config_from_dict"]
