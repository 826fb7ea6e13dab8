"""Where weights come from (models, state dicts, safetensors, checkpoints, HF folders) and
which tensors count as matrices. See ``sources`` and ``layers``."""
from .layers import LAYER_TYPES, as_matrices, dtype_skip_reason, infer_layer_type, is_matrix_candidate, matrix_dims
from .sources import SourceError, SourceNotFound, TensorRef, WeightSource, open_source

__all__ = [
    "LAYER_TYPES", "as_matrices", "dtype_skip_reason", "infer_layer_type", "is_matrix_candidate", "matrix_dims",
    "SourceError", "SourceNotFound", "TensorRef", "WeightSource", "open_source",
]
