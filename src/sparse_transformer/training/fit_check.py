"""Before training: does the schedule and the model fit the amount of training data?

Rules of thumb for byte-level models, printed as warnings (never errors):

* more than ``MAX_EPOCHS`` passes over the training split: a model of any useful size starts to
  memorise its training bytes (validation loss rises while training loss falls);
* more than ``MAX_PARAMS_PER_BYTE`` parameters per training byte: the model can memorise the
  split outright (a 6.5 M-parameter model over 10 MB overfits within its schedule);
* more than ``MAX_TOKENS_PER_PARAM`` planned training tokens per parameter: about a hundred times
  the compute-optimal ratio (about 20 tokens per parameter, Hoffmann et al. 2022), so a larger
  model would learn more from the same steps.
"""
from __future__ import annotations

MAX_EPOCHS = 4.0
MAX_PARAMS_PER_BYTE = 1.0
MAX_TOKENS_PER_PARAM = 2000.0


def planned_tokens(cfg) -> int:
    """Training tokens (predicted bytes) the schedule asks for."""
    return cfg.train.steps * cfg.train.batch_size * cfg.model.seq_len


def train_bytes(split) -> int:
    """Bytes of a training split: a 1-D stream, or rows of whole sequences."""
    shape = getattr(split, "shape", None)
    if shape is not None and len(shape) == 2:
        return int(shape[0]) * int(shape[1])
    return len(split)


def data_fit_warnings(cfg, split, n_params: int) -> list[str]:
    """The warnings (possibly none) for training ``cfg`` with ``n_params`` parameters on the
    training split ``split``."""
    n = train_bytes(split)
    if n <= 0:
        return []
    tokens = planned_tokens(cfg)
    out = []
    epochs = tokens / n
    if epochs > MAX_EPOCHS:
        out.append(f"the schedule reads {tokens:,} training bytes, {epochs:.1f} passes over the "
                   f"{n:,}-byte training split (more than {MAX_EPOCHS:g}): expect overfitting. "
                   "Use fewer train.steps, more data, or model.dropout / train.early_stop_patience")
    if n_params > MAX_PARAMS_PER_BYTE * n:
        out.append(f"the model has {n_params:,} parameters for {n:,} training bytes (more than "
                   f"{MAX_PARAMS_PER_BYTE:g} per byte): it can memorise the data. Use a smaller "
                   "model (model.d_model, model.n_layers), more data, or model.dropout")
    if tokens > MAX_TOKENS_PER_PARAM * n_params:
        out.append(f"the schedule reads {tokens / n_params:,.0f} training bytes per parameter "
                   f"(more than {MAX_TOKENS_PER_PARAM:g}): the model is far too small for this "
                   "much training; a larger one would learn more from the same steps")
    return out
