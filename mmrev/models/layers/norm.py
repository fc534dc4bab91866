"""Normalisation layers of the ``mmrev`` scope."""
from mmpretrain.models.utils import LayerNorm2d

from mmrev.registry import MODELS

# LayerNorm over the channels of (B, C, H, W) maps, as ``type='mmrev.LN2d'`` from any
# scope (mmdet has no LN2d of its own).
MODELS.register_module('LN2d', module=LayerNorm2d)
