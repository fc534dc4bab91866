"""What RevViT and RevMViT share: the reversible switch, input and output formats,
pos-embed init, freezing."""
import math
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from torch import Tensor, nn

from mmrev.reversible import trainable_parameters
from mmrev.reversible.diagnostics import reversible_sequences, set_reversible
from mmrev.reversible.recomputation import EAGER_REASON, defers_to_backward

from ..layers import grid_pos_embed, square_grid


def _norm_of_concat(norm: nn.Module, x1: Tensor, x2: Tensor) -> Tensor:
    return norm(torch.cat([x1, x2], dim=-1))


@torch.compiler.disable(reason=EAGER_REASON)
def _uncompiled(fn: Callable, *args):
    return fn(*args)


class ReversibleBackbone(BaseBackbone):
    """A backbone with reversible stacks, an absolute ``pos_embed``, ``out_type`` and
    ``frozen_stages``.

    Subclasses set ``pos_embed`` and ``frozen_stages``, call :meth:`_set_out_type`, and
    list what ``frozen_stages`` freezes in :meth:`_frozen_modules` (besides
    ``pos_embed``, frozen from stage 0 on). Loading a checkpoint goes through
    :meth:`_prepare_checkpoint`.

    One convention for both backbones: the ``arch`` (a zoo name or a dict) holds every
    setting that fixes the weights' names and shapes (widths, depths, heads, patch
    embedding, biases); constructor arguments hold the rest (input size, regularisation,
    outputs, freezing, the engine's options). A custom arch dict needs
    ``REQUIRED_ARCH_KEYS`` and may set any other key of the zoo's entries; the others
    come from the zoo entry :meth:`_default_arch_name` names.
    """

    arch_zoo: dict = {}
    REQUIRED_ARCH_KEYS: Tuple[str, ...] = ()
    OUT_TYPES = ('avg_featmap', 'featmap', 'raw')

    def __init__(self, init_cfg=None):
        super().__init__(init_cfg)
        self._register_load_state_dict_pre_hook(self._prepare_checkpoint)

    def _prepare_checkpoint(self, state_dict: Dict[str, Tensor], prefix: str,
                            *args) -> None:
        """``load_state_dict`` pre-hook: interpolate a position embedding made for another
        input size, skip the weights of the parts this model does not build (layers or
        stages after its last output), and refuse weights of another architecture: a
        :class:`ValueError` names the tensors whose shapes differ and the arch the
        checkpoint looks like, instead of a warning and a model left at random."""
        self._resize_checkpoint_pos_embed(state_dict, prefix)
        unbuilt = tuple(prefix + part for part in self._unbuilt_prefixes())
        for key in [k for k in state_dict if unbuilt and k.startswith(unbuilt)]:
            del state_dict[key]
        ours = {k: v.shape for k, v in self.state_dict(keep_vars=True).items()}
        theirs = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        mismatched = [f'{k} {tuple(v.shape)} (model: {tuple(ours[k])})'
                      for k, v in theirs.items() if k in ours and v.shape != ours[k]]
        if theirs and (mismatched or not theirs.keys() & ours.keys()):
            what = (f'{len(mismatched)} tensors have other shapes: ' + ', '.join(
                mismatched[:4]) + (', ...' if len(mismatched) > 4 else '') if mismatched
                else f'none of its {len(theirs)} tensors is one of this model\'s, e.g. '
                + ', '.join(list(theirs)[:3]))
            raise ValueError(
                f'The checkpoint does not fit this {type(self).__name__} (arch '
                f'{self.arch_settings}): {what}. It looks like '
                f'{self._describe_weights(theirs)}: build the model with that arch, or '
                f'load a checkpoint of this one')
        if theirs:
            self._complete_checkpoint(state_dict, prefix)

    def _complete_checkpoint(self, state_dict: Dict[str, Tensor], prefix: str) -> None:
        """Add to a checkpoint of this backbone what it lacks by design and the model
        keeps at its initialisation (in place)."""

    def _build_pos_embed(self, grid: Sequence[int], embed_dims: int,
                         separable: bool = False) -> None:
        """An absolute position embedding for the token ``grid``: one table, or for
        clips (t, h, w) with ``separable``, a spatial (h * w) and a temporal (t) one
        that add up (SlowFast's ``SEP_POS_EMBED``)."""
        self.patch_resolution = tuple(grid)
        self.separable_pos_embed = separable
        if separable:
            self.pos_embed_spatial = nn.Parameter(
                torch.zeros(1, math.prod(grid[1:]), embed_dims))
            self.pos_embed_temporal = nn.Parameter(torch.zeros(1, grid[0], embed_dims))
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, math.prod(grid), embed_dims))

    def _pos_embed_tables(self) -> Dict[str, Tuple[nn.Parameter, Tuple[int, ...]]]:
        """Each position embedding table by name, with the grid it is made for."""
        if not self.separable_pos_embed:
            return dict(pos_embed=(self.pos_embed, self.patch_resolution))
        return dict(pos_embed_spatial=(self.pos_embed_spatial, self.patch_resolution[1:]),
                    pos_embed_temporal=(self.pos_embed_temporal, self.patch_resolution[:1]))

    def _pos_embed_map(self, grid: Sequence[int]) -> Tensor:
        """The position embedding of a (1, *grid, C) token map, interpolated from the
        grid it is made for when they differ."""
        grid = tuple(grid)
        if not self.separable_pos_embed:
            return grid_pos_embed(self.pos_embed, self.patch_resolution, grid)
        spatial = grid_pos_embed(self.pos_embed_spatial, self.patch_resolution[1:], grid[1:])
        temporal = grid_pos_embed(self.pos_embed_temporal, self.patch_resolution[:1],
                                  grid[:1])
        return spatial.unsqueeze(1) + temporal[:, :, None, None]

    def _resize_checkpoint_pos_embed(self, state_dict: Dict[str, Tensor],
                                     prefix: str) -> None:
        """Interpolate a checkpoint's position embeddings made for another grid (square
        spatial tables, temporal ones of any length) to this model's."""
        for name, (table, grid) in self._pos_embed_tables().items():
            theirs = state_dict.get(prefix + name)
            if (theirs is None or theirs.shape == table.shape or theirs.ndim != 3
                    or theirs.shape[-1] != table.shape[-1] or len(grid) == 3):
                continue
            src = square_grid(theirs.shape[1]) if len(grid) == 2 else (theirs.shape[1], )
            with torch.no_grad():
                state_dict[prefix + name] = grid_pos_embed(theirs, src, grid).flatten(1, -2)

    def _unbuilt_prefixes(self) -> List[str]:
        """Names (ending in '.') of the parts of the arch that this model does not
        build."""
        return []

    def _describe_weights(self, state_dict: Dict[str, Tensor]) -> str:
        """What backbone the weights ``state_dict`` (names without prefix) are of."""
        raise NotImplementedError

    @classmethod
    def _zoo_name(cls, **settings) -> Optional[str]:
        """The longest name of the arch zoo whose settings include ``settings``."""
        names = [name for name, arch in cls.arch_zoo.items()
                 if all(arch.get(k) == v for k, v in settings.items())]
        return max(names, key=len) if names else None

    @classmethod
    def _zoo_arch(cls, name: str) -> dict:
        """The settings of the arch zoo's ``name`` (case-insensitive)."""
        if name.lower() not in cls.arch_zoo:
            raise ValueError(f'Unknown {cls.__name__} arch {name!r}; choose one of '
                             f'{sorted(set(cls.arch_zoo))} or pass a dict')
        return cls.arch_zoo[name.lower()]

    @classmethod
    def _parse_arch(cls, arch) -> dict:
        """The complete settings of the zoo name or custom dict ``arch``."""
        if isinstance(arch, str):
            return cls._zoo_arch(arch)
        allowed = set().union(*cls.arch_zoo.values())
        if (not isinstance(arch, dict) or not set(cls.REQUIRED_ARCH_KEYS) <= set(arch)
                or not set(arch) <= allowed):
            raise ValueError(f'A custom {cls.__name__} arch must be a dict with the keys '
                             f'{list(cls.REQUIRED_ARCH_KEYS)} and optionally any of '
                             f'{sorted(allowed - set(cls.REQUIRED_ARCH_KEYS))}, '
                             f'got {arch!r}')
        arch = {**cls.arch_zoo[cls._default_arch_name(arch)], **arch}
        cls._check_arch(arch)
        return arch

    @classmethod
    def _default_arch_name(cls, arch: dict) -> str:
        """The zoo entry whose settings a custom ``arch`` leaves out."""
        return 'base'

    @classmethod
    def _check_arch(cls, arch: dict) -> None:
        """Raise :class:`ValueError` on settings that do not make a model."""

    def embed(self, x: Tensor) -> Tensor:
        """Images or clips to the position-embedded token map."""
        raise NotImplementedError

    def trunk(self, x: Tensor) -> Tuple[Tensor, ...]:
        """The token map ``x`` through the layers to the outputs."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """:meth:`embed`, then :meth:`trunk`.

        While a stack trains with reversible backprop, the trunk runs uncompiled under
        ``torch.compile``: its stacks and reruns would anyway (see
        :class:`~mmrev.reversible.ReversibleSequence`), and one graph break replaces one
        per stack and rerun part.
        """
        tokens = self.embed(x)
        if (self.training and defers_to_backward()
                and any(stack.reversible for stack in reversible_sequences(self))):
            return _uncompiled(self.trunk, tokens)
        return self.trunk(tokens)

    def _set_out_type(self, out_type: str) -> None:
        if out_type not in self.OUT_TYPES:
            raise ValueError(f'out_type must be one of {self.OUT_TYPES}, got {out_type!r}')
        self.out_type = out_type

    def _format(self, x: Tensor) -> Tensor:
        """A token map (B, *grid, C) as ``out_type`` asks: (B, C), (B, C, *grid) or
        (B, prod(grid), C)."""
        if self.out_type == 'avg_featmap':
            return x.mean(dim=tuple(range(1, x.ndim - 1)))
        if self.out_type == 'featmap':
            return x.movedim(-1, 1).contiguous()
        return x.flatten(1, -2)

    def _output(self, norm: nn.Module, x1: Tensor, x2: Tensor, run: Callable) -> Tensor:
        """``norm([x1, x2])`` (the streams' concatenation) as ``out_type`` asks, the norm
        run by ``run`` (in reversible training: rerun in backward, keeping only the
        streams, which the stack keeps anyway)."""
        return self._format(run(partial(_norm_of_concat, norm), x1, x2,
                                params=trainable_parameters(norm)))

    @staticmethod
    def _check_input_size(x: Tensor, divisor: int, what: str) -> None:
        """Raise if the image sides (the last two dims) of ``x`` are not multiples of
        ``divisor``."""
        H, W = x.shape[-2:]
        if H % divisor or W % divisor:
            raise ValueError(f'Input size {H}x{W} is not a multiple of {what}: resize or '
                             f'pad the image to multiples of {divisor}')

    @property
    def reversible(self) -> bool:
        """Whether the reversible stacks use reversible backprop in training."""
        return all(sequence.reversible for sequence in reversible_sequences(self))

    @reversible.setter
    def reversible(self, value: bool) -> None:
        set_reversible(self, value)

    num_layers: int

    def _layer_index(self, name: str) -> Optional[int]:
        """The layer (0-based) that holds the parameter ``name``, None outside the
        layers."""
        raise NotImplementedError

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """The depth of a parameter for layer-wise learning-rate decay, and the number of
        depths, as mmpretrain's backbones give them: 0 for the patch and position
        embeddings, ``i + 1`` for layer ``i``, ``num_layers + 1`` for the rest (output
        norms; outside the backbone, i.e. not starting with ``prefix``: neck, heads).
        """
        num_depths = self.num_layers + 2
        if not param_name.startswith(prefix):
            return num_depths - 1, num_depths
        name = param_name[len(prefix):]
        if name.startswith(('patch_embed.', 'pos_embed')):
            return 0, num_depths
        layer = self._layer_index(name)
        return (num_depths - 1 if layer is None else layer + 1), num_depths

    def init_weights(self) -> None:
        super().init_weights()
        if not (isinstance(self.init_cfg, dict)
                and self.init_cfg['type'] == 'Pretrained'):
            for table, _ in self._pos_embed_tables().values():
                nn.init.trunc_normal_(table, std=.02)

    def _frozen_modules(self) -> List[nn.Module]:
        raise NotImplementedError

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            for table, _ in self._pos_embed_tables().values():
                table.requires_grad = False
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'ReversibleBackbone':
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self
