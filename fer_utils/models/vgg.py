"""VGG16 transfer learning: the conv base with ImageNet weights and a new head."""

__all__ = []
