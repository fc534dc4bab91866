from .attention import Attention
from .embed import PatchEmbed, grid_pos_embed, square_grid
from .fusion import TwoStreamFusion
from .mlp import Mlp
from .norm import LayerNorm2d
from .pooling_attention import PoolingAttention, pool_heads

__all__ = ['Attention', 'LayerNorm2d', 'Mlp', 'PatchEmbed', 'grid_pos_embed',
           'square_grid', 'PoolingAttention', 'pool_heads', 'TwoStreamFusion']
