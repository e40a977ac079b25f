"""numbaconv: fast CPU convolution (1-d, 2-d and 3-d) in pure Python and Numba.

Most 3x3 and small 1x1 layers run a register-tiled GEMM micro-kernel written
through Numba that reads the input in place (``indirect_gemm``,
``pointwise_gemm``); large 1x1 layers and the rest go to NumPy's BLAS matmul,
directly or after an im2col gather; depthwise layers run a direct kernel.  A
dispatcher picks the algorithm per problem and caches both plans and
compiled kernels.  Both PyTorch's NCHW/OIHW and TensorFlow/JAX's
NHWC/HWIO layouts are native.
"""

# _threads first: it must configure OpenMP before Numba loads it.
from . import _threads  # noqa: F401, I001
from . import config
from ._execute import release_workspace
from ._threads import get_num_threads, set_num_threads, threads
from ._plan import CacheInfo, Plan, cache_clear, cache_info
from .conv import col2im, conv2d, conv2d_with, explain, im2col
from .backward import conv2d_backward, conv2d_grad_input, conv2d_grad_weight
from .transpose import conv_transpose2d
from .convnd import (
    conv1d,
    conv1d_backward,
    conv3d,
    conv3d_backward,
    conv_transpose1d,
    conv_transpose3d,
)
from .layers import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from .packed import PackedWeight, pack_weight

__version__ = "0.1.0"

__all__ = [
    "CacheInfo",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "PackedWeight",
    "Plan",
    "cache_clear",
    "cache_info",
    "col2im",
    "config",
    "conv1d",
    "conv1d_backward",
    "conv2d",
    "conv2d_backward",
    "conv2d_grad_input",
    "conv2d_grad_weight",
    "conv2d_with",
    "conv3d",
    "conv3d_backward",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "explain",
    "get_num_threads",
    "im2col",
    "pack_weight",
    "release_workspace",
    "set_num_threads",
    "threads",
]
