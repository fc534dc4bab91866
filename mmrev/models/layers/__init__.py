from .attention import Attention
from .embed import PatchEmbed, grid_pos_embed, resize_pos_embed_hook
from .mlp import Mlp
from .norm import LayerNorm2d

__all__ = ['Attention', 'LayerNorm2d', 'Mlp', 'PatchEmbed', 'grid_pos_embed',
           'resize_pos_embed_hook']
