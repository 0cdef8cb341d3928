"""The LR-ASPP decoder of MobileNetV3 (paper section 6.4, Figure 10; docs/reference_facts.md).

    high (stride 16) -> 1x1 conv F, no bias -> BN -> ReLU ...................... semantic
    high (stride 16) -> avg pool -> 1x1 conv F (bias) -> sigmoid -> bilinear ... attention
    semantic * attention -> bilinear to stride 8 -> 1x1 conv num_classes (bias)
  + low (stride 8)   -> 1x1 conv num_classes (bias)
    -> bilinear to the input image size (align_corners=False)

`variant="deeplab"` builds the LR-ASPP of DeepLab's released Cityscapes checkpoints instead
(docs/reference_facts.md lists every difference with its source line): hard-sigmoid gate
(`relu6(x + 3) * 0.16667`, DeepLab's `q_sigmoid`), pooling stride (4, 5) at every output stride,
head batch norm epsilon 1e-5, and bilinear resizes with `align_corners=True`. Its layer names are
the paper variant's, so the same importer and MAdds counter serve both.

The decoder is added to a functional graph as standard Keras layers, so `count_madds` sees every
convolution. Two custom layers handle what dynamic shapes need: `AttentionPooling` and
`ResizeToMatch`.

Attention pooling
-----------------
`global`: mean over the whole feature map (torchvision's choice); works at any size.

`paper`: average pooling with a large window and stride, 49x49 with stride (16, 20) for the paper's
769x769 training crop at output stride 16. `paper_pooling_geometry` derives both for any crop and
output stride:

- window = ceil(crop / output_stride) per axis, the feature size of a training crop under SAME
  padding (DeepLab's `scale_dimension`): 769 at OS16 -> 49, at OS32 -> 25. On a training crop
  the pool is therefore exactly a global pool.
- stride: the paper gives (16, 20) for the 49 window and no rule; we keep the same fraction of the
  window, stride = round(window * (16, 20) / 49), so the pooled grid on a large evaluation image
  has the same shape at every output stride (769 at OS32 -> window 25, stride (8, 10)). DeepLab's
  released OS32 configs use stride (4, 5) instead; pass `strides=` explicitly to reproduce them.

Where the feature map is smaller than the window (inputs below the training crop), each axis'
window is clamped to the feature size at run time, which on that axis is a global mean. The pooling
is written as two small matrix products with averaging matrices built from the dynamic shape, so
one graph serves every input size (a static `avg_pool` window cannot be clamped at run time).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import layers

from ondevice_vision.backbones.batch_norm import BatchNormalization
from ondevice_vision.configs import checks

ATTENTION_POOLING = checks.ATTENTION_POOLING
LRASPP_VARIANTS = checks.LRASPP_VARIANTS
# DeepLab's `image_pooling_stride=4,5` (g3doc/model_zoo.md) and `q_sigmoid` factor (core/utils.py).
DEEPLAB_POOL_STRIDES = (4, 5)
DEEPLAB_QSIGMOID_SCALE = 0.16667
# The paper's window and stride for a 769x769 crop at output stride 16.
_PAPER_WINDOW = 49
_PAPER_STRIDES = (16, 20)


def _pair(value, what: str) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f"{what} must be a positive int or a pair of them, got {value!r}")
    return value


def paper_pooling_geometry(
    crop_size, output_stride: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(window, strides) of the paper's attention pooling for a training crop (see module doc)."""
    crop = _pair(crop_size, "crop_size")
    window = tuple(math.ceil(c / output_stride) for c in crop)
    strides = tuple(
        max(1, round(w * s / _PAPER_WINDOW)) for w, s in zip(window, _PAPER_STRIDES, strict=True)
    )
    return window, strides


def _averaging_matrix(size, window: int, stride: int, dtype):
    """[n_out, size] matrix averaging VALID windows of min(window, size) taken every `stride`."""
    window = tf.minimum(window, size)
    n_out = (size - window) // stride + 1
    starts = tf.range(n_out)[:, None] * stride
    positions = tf.range(size)[None, :]
    inside = (positions >= starts) & (positions < starts + window)
    return tf.cast(inside, dtype) / tf.cast(window, dtype)


@keras.saving.register_keras_serializable(package="ondevice_vision")
class AttentionPooling(layers.Layer):
    """LR-ASPP's pooling: `global` mean, or `paper` VALID average pooling clamped to the input.

    Output [B, h, w, C]: (1, 1) for `global`; for `paper`, per axis
    floor((size - min(window, size)) / stride) + 1.
    """

    def __init__(self, mode: str = "global", window=(49, 49), strides=(16, 20), **kwargs):
        super().__init__(**kwargs)
        if mode not in ATTENTION_POOLING:
            raise ValueError(f"attention pooling must be one of {ATTENTION_POOLING}, got {mode!r}")
        self.mode = mode
        self.window = _pair(window, "window")
        self.strides = _pair(strides, "strides")

    def call(self, inputs):
        if self.mode == "global":
            return tf.reduce_mean(inputs, axis=(1, 2), keepdims=True)
        # Sums of up to 49x49 values: average in float32 even under mixed precision.
        x = tf.cast(inputs, tf.float32)
        height, width = inputs.shape[1], inputs.shape[2]
        if height is not None and width is not None:
            # Known size (fixed-shape exports): the same windows as one VALID average pool, which
            # TFLite runs as AVERAGE_POOL_2D (the Edge TPU too); the matrices below would become
            # TRANSPOSE + FULLY_CONNECTED, which the Edge TPU does not run (export/edgetpu_ops.py).
            window = (min(self.window[0], height), min(self.window[1], width))
            x = tf.nn.avg_pool2d(x, window, self.strides, "VALID")
            return tf.cast(x, self.compute_dtype)
        shape = tf.shape(x)
        rows = _averaging_matrix(shape[1], self.window[0], self.strides[0], tf.float32)
        cols = _averaging_matrix(shape[2], self.window[1], self.strides[1], tf.float32)
        x = tf.einsum("ih,bhwc->biwc", rows, x)
        x = tf.einsum("jw,biwc->bijc", cols, x)
        return tf.cast(x, self.compute_dtype)

    def simulate_int8(self, inputs, quantize):
        """The pooling as int8 TFLite computes it, `quantize(suffix, y)` marking each int8 tensor
        (quantization-aware training): at a known size (every export) one AVERAGE_POOL_2D, one
        int8 output; otherwise two matrix products (FULLY_CONNECTED), each output int8."""
        if self.mode == "global" or (inputs.shape[1] is not None and inputs.shape[2] is not None):
            return quantize("", self(inputs))
        shape = tf.shape(inputs)
        rows = _averaging_matrix(shape[1], self.window[0], self.strides[0], tf.float32)
        cols = _averaging_matrix(shape[2], self.window[1], self.strides[1], tf.float32)
        x = quantize("/rows", tf.einsum("ih,bhwc->biwc", rows, inputs))
        return quantize("", tf.einsum("jw,biwc->bijc", cols, x))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        if self.mode == "global":
            return (batch, 1, 1, channels)

        def pooled(size, window, stride):
            if size is None:
                return None
            return (size - min(window, size)) // stride + 1

        return (
            batch,
            pooled(height, self.window[0], self.strides[0]),
            pooled(width, self.window[1], self.strides[1]),
            channels,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {"mode": self.mode, "window": list(self.window), "strides": list(self.strides)}
        )
        return config


@keras.saving.register_keras_serializable(package="ondevice_vision")
class QSigmoid(layers.Layer):
    """DeepLab's hard sigmoid gate: relu6(x + 3) * 0.16667 (not exactly 1/6, as DeepLab has it)."""

    def call(self, inputs):
        return tf.nn.relu6(inputs + 3.0) * tf.cast(DEEPLAB_QSIGMOID_SCALE, inputs.dtype)


@keras.saving.register_keras_serializable(package="ondevice_vision")
class ResizeToMatch(layers.Layer):
    """Bilinearly resizes `inputs[0]` to the height and width of `inputs[1]` (any dtype).

    Half-pixel centres (align_corners=False) by default, as tf.image.resize and torchvision's
    LR-ASPP; `align_corners=True` as DeepLab's `resize_bilinear`.
    """

    def __init__(self, interpolation: str = "bilinear", align_corners: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.interpolation = interpolation
        self.align_corners = bool(align_corners)

    def call(self, inputs):
        x, reference = inputs
        size = tf.shape(reference)[1:3]
        if self.align_corners:
            resized = tf.compat.v1.image.resize_bilinear(x, size, align_corners=True)
            return tf.cast(resized, self.compute_dtype)
        # tf.image.resize returns float32 for bilinear; keep the layer's compute dtype.
        return tf.cast(tf.image.resize(x, size, method=self.interpolation), self.compute_dtype)

    def compute_output_shape(self, input_shapes):
        x_shape, reference_shape = input_shapes
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[3])

    def madds(self, input_shape, output_shape):
        """Bilinear: each output value is a weighted sum of 4 inputs (see model_stats)."""
        del input_shape
        per_value = 4 if self.interpolation == "bilinear" else 0
        return per_value * math.prod(output_shape[1:])

    def get_config(self):
        config = super().get_config()
        config["interpolation"] = self.interpolation
        config["align_corners"] = self.align_corners
        return config


def lraspp_decoder(
    low,
    high,
    image,
    num_classes: int,
    filters: int = 128,
    attention_pooling: str = "paper",
    pool_window=(49, 49),
    pool_strides=(16, 20),
    bn_momentum: float = 0.99,
    bn_epsilon: float | None = None,
    name: str = "lraspp",
    variant: str = "paper",
):
    """Adds the decoder to a functional graph; returns float32 logits at `image`'s size.

    low: the stride-8 feature; high: the feature at the output stride; image: any tensor whose
    height and width are those of the output (the input image). `variant`: "paper" or "deeplab"
    (module doc); `bn_epsilon` defaults to 1e-3 (paper) / 1e-5 (DeepLab).
    """
    if variant not in LRASPP_VARIANTS:
        raise ValueError(f"lraspp_variant must be one of {LRASPP_VARIANTS}, got {variant!r}")
    deeplab = variant == "deeplab"
    if bn_epsilon is None:
        bn_epsilon = 1e-5 if deeplab else 1e-3
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if filters < 1:
        raise ValueError(f"filters must be >= 1, got {filters}")
    semantic = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_semantic_conv")(high)
    semantic = BatchNormalization(
        momentum=bn_momentum, epsilon=bn_epsilon, name=f"{name}_semantic_bn"
    )(semantic)
    semantic = layers.ReLU(name=f"{name}_semantic_relu")(semantic)

    attention = AttentionPooling(
        attention_pooling, pool_window, pool_strides, name=f"{name}_attention_pool"
    )(high)
    # No BN after the attention conv (SE style), so it keeps its bias, as DeepLab's slim conv does.
    attention = layers.Conv2D(filters, 1, use_bias=True, name=f"{name}_attention_conv")(attention)
    if deeplab:
        attention = QSigmoid(name=f"{name}_attention_sigmoid")(attention)
    else:
        attention = layers.Activation("sigmoid", name=f"{name}_attention_sigmoid")(attention)
    attention = ResizeToMatch(align_corners=deeplab, name=f"{name}_attention_resize")(
        [attention, semantic]
    )
    gated = layers.Multiply(name=f"{name}_gate")([semantic, attention])

    gated = ResizeToMatch(align_corners=deeplab, name=f"{name}_high_resize")([gated, low])
    high_logits = layers.Conv2D(num_classes, 1, name=f"{name}_high_logits")(gated)
    low_logits = layers.Conv2D(num_classes, 1, name=f"{name}_low_logits")(low)
    logits = layers.Add(name=f"{name}_logits")([high_logits, low_logits])
    # Resized in float32: full-resolution logits feed the loss and the argmax.
    return ResizeToMatch(align_corners=deeplab, dtype="float32", name=f"{name}_upsample")(
        [logits, image]
    )
