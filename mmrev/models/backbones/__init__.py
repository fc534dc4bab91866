from .revvit import RevViT

__all__ = ['RevViT']
