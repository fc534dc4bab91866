"""Layer-wise learning-rate decay for any model whose backbone tells its layer depths."""
from functools import partial
from typing import Callable, List, Optional

from mmpretrain.engine.optimizers import LearningRateDecayOptimWrapperConstructor
from torch import nn

from mmrev.registry import OPTIM_WRAPPER_CONSTRUCTORS


def layer_depth_function(model: nn.Module) -> Callable:
    """``model``'s own ``get_layer_depth`` (mmpretrain classifiers), or its backbone's
    with the ``backbone.`` prefix, which puts everything outside the backbone (neck,
    heads) at the top depth."""
    if hasattr(model, 'get_layer_depth'):
        return model.get_layer_depth
    backbone = getattr(model, 'backbone', None)
    if hasattr(backbone, 'get_layer_depth'):
        return partial(backbone.get_layer_depth, prefix='backbone.')
    raise TypeError(f'Layer-wise lr decay needs a model or backbone with get_layer_depth '
                    f'(mmrev.RevViT, mmrev.RevMViT, mmpretrain ViTs); '
                    f'{type(model).__name__} with backbone {type(backbone).__name__} '
                    f'has none')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(LearningRateDecayOptimWrapperConstructor):
    """mmpretrain's ``LearningRateDecayOptimWrapperConstructor`` for detectors and
    recognizers too: the learning rate of a backbone parameter at depth ``d`` of ``n``
    (``backbone.get_layer_depth``) is ``lr * layer_decay_rate ** (n - 1 - d)``; necks
    and heads train at ``lr``.

    ``paramwise_cfg`` takes mmpretrain's keys: ``layer_decay_rate``,
    ``flat_decay_mult`` / ``norm_decay_mult`` / ``bias_decay_mult`` and ``custom_keys``
    (weight decay only). ViTDet's recipe (no weight decay on norms, biases and
    position embeddings)::

        optim_wrapper = dict(
            constructor='mmrev.LayerDecayOptimWrapperConstructor',
            optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.1),
            paramwise_cfg=dict(layer_decay_rate=0.7, flat_decay_mult=0.,
                               custom_keys={'pos_embed': dict(decay_mult=0.)}))
    """

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   get_layer_depth: Optional[Callable] = None, **kwargs) -> None:
        if get_layer_depth is None:
            get_layer_depth = layer_depth_function(module)
        super().add_params(params, module, prefix, get_layer_depth, **kwargs)
