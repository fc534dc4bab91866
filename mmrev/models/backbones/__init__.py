from .revmvit import RevMViT
from .revvit import RevViT

__all__ = ['RevViT', 'RevMViT']
