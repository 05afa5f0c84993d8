"""Model builders: a small CNN, task heads, VGG16 transfer learning, E-Net and EAC-Net."""

from .small import *  # noqa: F401,F403
from .layers import *  # noqa: F401,F403
from .preprocess import *  # noqa: F401,F403
from .vgg import *  # noqa: F401,F403
from .eacnet import *  # noqa: F401,F403
