"""dfi_engine: Deep Feature Interpolation as pure computation.

Public API::

    net = load_network("torchvision" | "gatys" | "random:0" | path, device="cuda")
    w = attribute_vector(net, source_images, target_images)          # streamed means
    res = apply_vector(net, photo, w, [0.4, 0.8], mask=sel)            # one batched inversion
    res = edit(net, photo, source_images, target_images, [0.4])       # both steps at once
    res = inpaint(net, photo, mask, neighbour_images)                 # fill a region

Images are numpy arrays (grey, grey+alpha, RGB, RGBA; 8/16-bit or float);
results come back in the same layout, one per strength, with every pixel
outside the mask bit-identical to the input.
"""

from .attribute import attribute_vector, scale_vector, target_features
from .edit import EditOptions, EditResult, apply_vector, edit, inpaint
from .errors import (
    CancelledError,
    DFIError,
    ImageTooLargeError,
    ImageTooSmallError,
    InputError,
    WeightsError,
)
from .features import extract, mean_features
from .images import merge_image, read_image, split_image, to_mask
from .postprocess import color_match, compose, feather
from .reconstruct import ReconstructConfig, reconstruct
from .vgg import DEFAULT_LAYERS, VGGFeatures
from .weights import DEFAULT_WEIGHTS, SOURCES, load_network

__all__ = [
    "DEFAULT_LAYERS", "DEFAULT_WEIGHTS", "SOURCES", "CancelledError", "DFIError", "EditOptions",
    "EditResult", "ImageTooLargeError", "ImageTooSmallError", "InputError", "ReconstructConfig",
    "VGGFeatures", "WeightsError", "apply_vector", "attribute_vector", "color_match", "compose",
    "edit", "extract", "feather", "inpaint", "load_network", "mean_features", "merge_image",
    "read_image", "reconstruct", "scale_vector", "split_image", "target_features", "to_mask",
]
