"""Where weights come from (models, state dicts, safetensors, checkpoints, HF folders) and
which tensors count as matrices, and how a conv's input becomes its patch matrix. See
``sources``, ``layers`` and ``conv_patches``."""
from .conv_patches import PATCH_CHUNK_ELEMENTS, PatchGeometry, conv_patches, patch_gram, patch_stable_rank
from .layers import LAYER_TYPES, as_matrices, dtype_skip_reason, infer_layer_type, is_matrix_candidate, matrix_dims
from .sources import SourceError, SourceNotFound, TensorRef, WeightSource, open_source

__all__ = [
    "LAYER_TYPES", "as_matrices", "dtype_skip_reason", "infer_layer_type", "is_matrix_candidate", "matrix_dims",
    "SourceError", "SourceNotFound", "TensorRef", "WeightSource", "open_source",
    "PATCH_CHUNK_ELEMENTS", "PatchGeometry", "conv_patches", "patch_gram", "patch_stable_rank",
]
