from .attention import Attention
from .embed import PatchEmbed, grid_pos_embed, resize_pos_embed_hook
from .mlp import Mlp

__all__ = ['Attention', 'Mlp', 'PatchEmbed', 'grid_pos_embed',
           'resize_pos_embed_hook']
