"""E-Net and EAC-Net: attention-enhanced VGG16 and region crops for action-unit detection."""

__all__ = []
