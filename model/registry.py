"""The model names a config can give: each family registers itself beside its class (``@ARCHS.register``)."""

from __future__ import annotations

from util.registry import Registry

ARCHS = Registry("arch")  # semseg-style networks (model.base.SegNet subclasses), config key ``arch``
BACKBONES = Registry("backbone")  # trunks a SegNet is built on (model.base.Trunk builders), key ``backbone``
# Networks named whole, config key ``model``: builder(name, classes); VainF's also take output_stride, separable_conv.
MODELS = Registry("model")
