"""Small CNNs built from scratch and the heads for the three task types."""

__all__ = []
