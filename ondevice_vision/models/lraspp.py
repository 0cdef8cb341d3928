"""The LR-ASPP segmenter: a MobileNet backbone plus the LR-ASPP decoder (docs/reference_facts.md).

Which reduced tail reproduces the paper
---------------------------------------
Paper Table 7 (F=128, 19 classes, 1024x2048): V3-Large RF2 1.51M params / 9.74B MAdds, V3-Small
0.47M / 2.90B; Table 8 at OS32: 7.74B / 2.06B. The backbone's reduced_tail="segmentation" is
DeepLab's `mobilenet_v3_*_seg`: the first block of the last stage has its expansion halved
(V3-Large 672 -> 336, V3-Small 288 -> 144), then the detection tail's halving (outputs 80 / 48,
expansions 480 / 288, head conv 480 / 288). Measured (`ondevice-info`, bilinear resizes counted as
4 MAdds per output value, see model_stats.py):

| backbone, reduced_tail | trainable params | MAdds OS16 | MAdds OS32 |
|---|---|---|---|
| V3-Large, "segmentation" (default) | 1,507,198 (-0.2%) | 9.548B (-2.0%) | 7.624B (-1.5%) |
| V3-Small, "segmentation" (default) | 468,830 (-0.2%)   | 2.910B (+0.3%) | 2.102B (+2.0%) |

The detection tail (layer 14's expansion kept at 672) gives 1,748,526 / 516,958 parameters
(+16% / +10%) and so is not the paper's segmentation network.

Output stride 16 puts the last stage at stride 16 with dilation 2 (the backbone's
`output_stride`); 32 keeps it at stride 32; 8 is accepted as well (then both taps are stride 8).

`lraspp_variant="deeplab"` is the LR-ASPP of DeepLab's released Cityscapes checkpoints
(lraspp_decoder.py, docs/reference_facts.md); with DeepLab's flags (output stride 32, crop 769, 19 classes) at
1024x2048 (`ondevice-info`):

| backbone, variant "deeplab", OS32 | trainable params | MAdds |
|---|---|---|
| V3-Large | 1,507,198 | 7.624B |
| V3-Small | 468,830 | 2.103B |

The parameters are the paper variant's (the differences are activations, strides, epsilon and
resizes). DeepLab's model zoo lists 15.95B / 4.63B "Multiply-Adds" for these checkpoints, about
2.1x / 2.2x our count and the paper's Table 8 (7.74B / 2.06B at OS32); we found no definition of
DeepLab's count and reproduce the paper's.
"""

from __future__ import annotations

import keras

from ondevice_vision.backbones import build_backbone
from ondevice_vision.configs import checks
from ondevice_vision.models.lraspp_decoder import (
    ATTENTION_POOLING,
    DEEPLAB_POOL_STRIDES,
    LRASPP_VARIANTS,
    lraspp_decoder,
    paper_pooling_geometry,
)

_ENDPOINTS = ("lraspp_low", "lraspp_high")


@keras.saving.register_keras_serializable(package="ondevice_vision")
class Segmenter(keras.Model):
    """Backbone (a nested `Backbone`, `self.backbone`) + LR-ASPP decoder.

    `Segmenter("mobilenet_v3_large", 19)` is the paper's V3-Large RF2 LR-ASPP F=128.

    Input: pixels in [0, 255], uint8 or float, any size. Output: float32 logits
    [B, H, W, num_classes] at the input resolution (also under a mixed-precision policy).
    `attention_pool_strides` overrides the strides derived from `crop_size` (see lraspp_decoder.py).
    `lraspp_variant`: "paper" or "deeplab" (DeepLab's released model: its pooling strides (4, 5)
    unless `attention_pool_strides` says otherwise).
    """

    def __init__(
        self,
        backbone: str = "mobilenet_v3_large",
        num_classes: int = 19,
        depth_multiplier: float = 1.0,
        reduced_tail="segmentation",
        output_stride: int = 16,
        head_filters: int = 128,
        attention_pooling: str = "paper",
        crop_size=(769, 769),
        attention_pool_strides=None,
        bn_momentum: float = 0.99,
        input_shape=(None, None, 3),
        lraspp_variant: str = "paper",
        **kwargs,
    ):
        if lraspp_variant not in LRASPP_VARIANTS:
            raise ValueError(
                f"lraspp_variant must be one of {LRASPP_VARIANTS}, got {lraspp_variant!r}"
            )
        if attention_pooling not in ATTENTION_POOLING:
            raise ValueError(
                f"attention_pooling must be one of {ATTENTION_POOLING}, got {attention_pooling!r}"
            )
        if output_stride not in checks.OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        crop_size = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        window, strides = paper_pooling_geometry(crop_size, output_stride)
        if lraspp_variant == "deeplab":
            strides = DEEPLAB_POOL_STRIDES
        if attention_pool_strides is not None:
            strides = attention_pool_strides
        net = build_backbone(
            backbone,
            depth_multiplier=depth_multiplier,
            reduced_tail=reduced_tail,
            output_stride=output_stride,
            endpoints=_ENDPOINTS,
            bn_momentum=bn_momentum,
            input_shape=input_shape,
            # The trainer and the ImageNet importers find the backbone by this name.
            name="backbone",
        )
        inputs = keras.Input(shape=tuple(input_shape), name="image")
        features = net(inputs)
        logits = lraspp_decoder(
            features["lraspp_low"],
            features["lraspp_high"],
            inputs,
            num_classes=num_classes,
            filters=head_filters,
            attention_pooling=attention_pooling,
            pool_window=window,
            pool_strides=strides,
            bn_momentum=bn_momentum,
            variant=lraspp_variant,
        )
        kwargs.setdefault("name", f"lraspp_{backbone}")
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self.backbone = net
        self.backbone_name = backbone
        self.num_classes = num_classes
        self.depth_multiplier = depth_multiplier
        self.reduced_tail = net.reduced_tail
        self.output_stride = output_stride
        self.head_filters = head_filters
        self.attention_pooling = attention_pooling
        self.crop_size = crop_size
        self.attention_pool_strides = (
            None if attention_pool_strides is None else list(attention_pool_strides)
        )
        self.bn_momentum = bn_momentum
        self.image_shape = tuple(input_shape)
        self.lraspp_variant = lraspp_variant

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": self.backbone_name,
            "num_classes": self.num_classes,
            "depth_multiplier": self.depth_multiplier,
            "reduced_tail": self.reduced_tail,
            "output_stride": self.output_stride,
            "head_filters": self.head_filters,
            "attention_pooling": self.attention_pooling,
            "crop_size": list(self.crop_size),
            "attention_pool_strides": self.attention_pool_strides,
            "bn_momentum": self.bn_momentum,
            "input_shape": list(self.image_shape),
            "lraspp_variant": self.lraspp_variant,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
