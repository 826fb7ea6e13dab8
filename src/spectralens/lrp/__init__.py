"""Layer-wise relevance propagation (LRP) as modified gradients, with the seed paper's bounds.

Binder, Takmil-Homayouni, Dogan, "LRP as products of modified gradient matrices"
(arXiv 2509.08963). User guide: ``docs/lrp.md``; matrices and bounds: ``docs/lrp-bounds.md``.

* :func:`attribute` / :func:`explain` - input relevance for a target class (``Explanation``).
* :mod:`rules` - ``Epsilon``, ``Gamma``, ``ZPlus``, ``AlphaBeta``, ``AdaptiveBeta``, ``Flat``,
  ``WSquare``, ``ZBox``, ``Pass``, ``Norm``, ``Gradient``.
* :mod:`composites` - which rule goes on which layer (``epsilon_plus()``, ...).
* :func:`lrp_context` - removable hooks; :func:`merge_batchnorm` - reversible BatchNorm merge.
* :class:`Sum` - explicit residual addition with the LRP split.
* :func:`layer_matrices` / :func:`chain` - explicit per-layer modified-gradient matrices;
  :mod:`bounds` - their singular-value bounds, attribution bounds, Hoeffding constants.
"""
from . import composites, rules
from .attribute import Explanation, attribute, explain
from .canonizers import merge_batchnorm
from .composites import Composite
from .errors import ModuleReuseError, UnsupportedLayerError
from .hooks import lrp_context
from .layers import Sum
from .matrices import LayerMatrix, LayerMatrices, chain, layer_matrices
from . import bounds

__all__ = ["attribute", "explain", "Explanation", "lrp_context", "merge_batchnorm", "Sum", "Composite",
           "composites", "rules", "UnsupportedLayerError", "ModuleReuseError",
           "LayerMatrix", "LayerMatrices", "layer_matrices", "chain", "bounds"]
