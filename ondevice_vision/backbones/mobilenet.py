"""MobileNetV3 (Large, Small, minimalistic) and MobileNetEdgeTPU as Keras functional models.

One builder serves all five networks: the differences live in `specs.py`. Layer names of the V3
variants are those of keras.applications, so its ImageNet `.h5` files load by name.
"""

from __future__ import annotations

import keras
from keras import layers

from ondevice_vision.backbones import specs as specs_lib
from ondevice_vision.backbones.batch_norm import BatchNormalization
from ondevice_vision.backbones.specs import Block, Spec, make_divisible

ENDPOINTS = (
    "stride_4",
    "stride_8",
    "stride_16",
    "stride_32",
    "ssd_c4",
    "ssd_c5",
    "lraspp_low",
    "lraspp_high",
)
REDUCED_TAILS = (None, "detection", "segmentation")


def _normalise_reduced_tail(value):
    if value is True:
        return "detection"
    if value in (False, None, "", "none"):
        return None
    if value not in REDUCED_TAILS:
        raise ValueError(f"reduced_tail must be one of {REDUCED_TAILS} or a bool, got {value!r}")
    return value


SLIM_HARD_SIGMOID_SCALE = 0.16667  # slim's rounded 1/6 (SlimHardSigmoid)


@keras.saving.register_keras_serializable(package="ondevice_vision")
class SlimHardSigmoid(layers.Layer):
    """The squeeze-excite gate exactly as slim's MobileNetV3 computes it: relu6(x + 3) * 0.16667.

    The rounded constant (not 1/6) is the reference's; with 1/6 every gate would be 2e-5 too
    small relative to the published weights' training, a difference the equality tests see.
    """

    def call(self, x):
        return keras.ops.relu6(x + 3.0) * SLIM_HARD_SIGMOID_SCALE

    def simulate_int8(self, x, quantize):
        """The gate as int8 TFLite computes it, `quantize(suffix, y)` marking each int8 tensor
        (quantization-aware training): ADD (+3, ReLU6 fused), then MUL by the scale."""
        shifted = quantize("/relu6", keras.ops.relu6(x + 3.0))
        return quantize("/hard_sigmoid", shifted * SLIM_HARD_SIGMOID_SCALE)


class _GraphBuilder:
    """Builds the layer graph while tracking stride/dilation and recording endpoints."""

    def __init__(self, spec: Spec, bn_momentum: float, output_stride: int, init_stddev=None):
        self.spec = spec
        # None: Keras' defaults (Glorot uniform); a number: the OD API's feature-extractor
        # initialiser, truncated_normal(stddev), for every conv including depthwise and SE.
        self.init_stddev = init_stddev
        self.bn_momentum = bn_momentum
        self.output_stride = output_stride
        self.current_stride = 1
        self.rate = 1
        self.endpoints = {}

    def init(self):
        if self.init_stddev is None:
            return {}
        return {"kernel_initializer": keras.initializers.TruncatedNormal(stddev=self.init_stddev)}

    def depthwise_init(self):
        if self.init_stddev is None:
            return {}
        return {
            "depthwise_initializer": keras.initializers.TruncatedNormal(stddev=self.init_stddev)
        }

    def bn(self, x, name):
        return BatchNormalization(
            epsilon=self.spec.bn_epsilon, momentum=self.bn_momentum, name=name
        )(x)

    def act(self, x, kind, name):
        if kind == "relu":
            return layers.ReLU(name=name)(x)
        return layers.Activation(kind, name=name)(x)

    def conv_bn_act(self, x, filters, kernel, stride, act, name, dilation=1):
        x = layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            dilation_rate=dilation,
            padding="same",
            use_bias=False,
            name=name,
            **self.init(),
        )(x)
        x = self.bn(x, name + "_bn")
        return self.act(x, act, name + "_act") if act else x

    def stride_and_rate(self, stride):
        """Output-stride control by dilation (slim's rule): once at the target stride, a
        downsampling block keeps stride 1 at the current rate and later blocks dilate more."""
        if stride > 1 and self.current_stride >= self.output_stride:
            layer_rate = self.rate
            self.rate *= stride
            return 1, layer_rate
        self.current_stride *= stride
        return stride, self.rate

    def squeeze_excite(self, x, filters, prefix):
        squeeze = make_divisible(filters * 0.25)
        s = layers.GlobalAveragePooling2D(keepdims=True, name=prefix + "squeeze_excite_avg_pool")(x)
        s = layers.Conv2D(
            squeeze, 1, padding="same", name=prefix + "squeeze_excite_conv", **self.init()
        )(s)
        s = layers.ReLU(name=prefix + "squeeze_excite_relu")(s)
        s = layers.Conv2D(
            filters, 1, padding="same", name=prefix + "squeeze_excite_conv_1", **self.init()
        )(s)
        s = SlimHardSigmoid(name=prefix + "squeeze_excite_gate")(s)
        return layers.Multiply(name=prefix + "squeeze_excite_mul")([x, s])

    def block(self, x, index: int, block: Block, out: int, taps: dict, halve_expansion=False):
        prefix = self.block_prefix(index)
        in_ch = x.shape[-1]
        exp = make_divisible(in_ch * block.expansion)
        if halve_expansion:
            exp = make_divisible(exp / 2)
        stride, rate = self.stride_and_rate(block.stride)
        shortcut = x
        if block.kind == "fused":
            if block.expansion != 1:
                x = self.conv_bn_act(
                    x, exp, block.kernel, stride, block.act, prefix + "fused", rate
                )
                taps["expansion"] = x
            taps["depthwise"] = x
        else:
            # The release omits the expand conv only in the very first block, whose expansion is 1.
            if index > 0 or in_ch != exp:
                x = layers.Conv2D(
                    exp, 1, padding="same", use_bias=False, name=prefix + "expand", **self.init()
                )(x)
                x = self.bn(x, prefix + "expand_bn")
                x = self.act(x, block.act, prefix + "expand_act")
            taps["expansion"] = x
            x = layers.DepthwiseConv2D(
                block.kernel,
                strides=stride,
                dilation_rate=rate,
                padding="same",
                use_bias=False,
                name=prefix + "depthwise",
                **self.depthwise_init(),
            )(x)
            x = self.bn(x, prefix + "depthwise_bn")
            x = self.act(x, block.act, prefix + "depthwise_act")
            taps["depthwise"] = x
            if block.se:
                x = self.squeeze_excite(x, exp, prefix)
        x = layers.Conv2D(
            out, 1, padding="same", use_bias=False, name=prefix + "project", **self.init()
        )(x)
        x = self.bn(x, prefix + "project_bn")
        if block.residual and stride == 1 and in_ch == out:
            x = layers.Add(name=prefix + "add")([shortcut, x])
        return x

    def block_prefix(self, index):
        if self.spec.keras_names:
            return "expanded_conv_" if index == 0 else f"expanded_conv_{index}_"
        return f"block_{index}_"


def build_backbone_graph(
    inputs,
    backbone: str,
    depth_multiplier: float = 1.0,
    include_top: bool = False,
    num_classes: int = 1000,
    reduced_tail=None,
    output_stride: int = 32,
    dropout_rate: float = 0.2,
    bn_momentum: float = 0.99,
    init_stddev: float | None = None,
):
    """Returns a dict of named tensors (the endpoints, plus `logits` with `include_top`)."""
    spec = specs_lib.get_spec(backbone)
    reduced_tail = _normalise_reduced_tail(reduced_tail)
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    halved = spec.detection_tail if reduced_tail else ()
    halved_expansion = spec.segmentation_expansion_block if reduced_tail == "segmentation" else None
    g = _GraphBuilder(spec, bn_momentum, output_stride, init_stddev)

    def depth(channels):
        return make_divisible(channels * depth_multiplier)

    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
    x = g.conv_bn_act(x, depth(spec.stem_filters), 3, 2, spec.stem_act, "conv")
    g.current_stride = 2
    nominal_stride = 2  # what the stride would be without dilation; names the endpoints
    endpoints = {}
    for index, block in enumerate(spec.blocks):
        out = depth(block.out)
        if index in halved:
            out = make_divisible(out / 2)
        taps = {}
        if block.stride > 1 and nominal_stride >= 4:
            # The last feature before each (nominal) downsampling is that stride's endpoint.
            endpoints[f"stride_{nominal_stride}"] = x
        nominal_stride *= block.stride
        x = g.block(x, index, block, out, taps, halve_expansion=index == halved_expansion)
        if index == spec.ssd_c4_block:
            endpoints["ssd_c4"] = taps["expansion"]
        if index == spec.ssd_c5_block:
            endpoints["ssd_c5"] = x
        if index == spec.lraspp_low_block:
            endpoints["lraspp_low"] = taps["depthwise"]
        if index == spec.lraspp_high_block:
            endpoints["lraspp_high"] = x
    if spec.head_filters is None:
        head = make_divisible(x.shape[-1] * 6)
    else:
        # Like the 1280/1024 classifier conv, EdgeTPU's head conv keeps its width below 1.0.
        head = spec.head_filters if depth_multiplier <= 1 else depth(spec.head_filters)
    x = g.conv_bn_act(x, head, 1, 1, spec.head_act, "conv_1")
    endpoints["stride_32"] = x
    endpoints.setdefault("ssd_c5", x)
    endpoints.setdefault("lraspp_high", x)
    if include_top:
        y = layers.GlobalAveragePooling2D(keepdims=True, name="avg_pool")(x)
        if spec.classifier_filters:
            width = spec.classifier_filters
            if depth_multiplier > 1:
                width = depth(width)
            y = layers.Conv2D(width, 1, padding="same", use_bias=True, name="conv_2")(y)
            y = g.act(y, spec.head_act, "conv_2_act")
        if dropout_rate > 0:
            y = layers.Dropout(dropout_rate, name="dropout")(y)
        y = layers.Conv2D(num_classes, 1, padding="same", name="logits")(y)
        endpoints["logits"] = layers.Flatten(name="flatten")(y)
    return {name: endpoints[name] for name in (*ENDPOINTS, "logits") if name in endpoints}


@keras.saving.register_keras_serializable(package="ondevice_vision")
class Backbone(keras.Model):
    """A backbone whose outputs are a dict of named endpoints (see ENDPOINTS).

    `endpoints` restricts the outputs (and so the layers) to what a head needs, e.g.
    ("ssd_c4", "ssd_c5"); None keeps all of them. Inputs are pixels in [0, 255], uint8 or float,
    of any size; the model rescales to [-1, 1] itself.
    """

    def __init__(
        self,
        backbone: str = "mobilenet_v3_large",
        depth_multiplier: float = 1.0,
        include_top: bool = False,
        num_classes: int = 1000,
        reduced_tail=None,
        output_stride: int = 32,
        dropout_rate: float = 0.2,
        bn_momentum: float = 0.99,
        init_stddev: float | None = None,
        endpoints=None,
        input_shape=(None, None, 3),
        **kwargs,
    ):
        inputs = keras.Input(shape=tuple(input_shape), name="image")
        outputs = build_backbone_graph(
            inputs,
            backbone,
            depth_multiplier=depth_multiplier,
            include_top=include_top,
            num_classes=num_classes,
            reduced_tail=reduced_tail,
            output_stride=output_stride,
            dropout_rate=dropout_rate,
            bn_momentum=bn_momentum,
            init_stddev=init_stddev,
        )
        if endpoints is not None:
            unknown = set(endpoints) - set(outputs)
            if unknown:
                raise ValueError(f"Unknown endpoints {sorted(unknown)}; have {sorted(outputs)}")
            outputs = {name: outputs[name] for name in endpoints}
        kwargs.setdefault("name", backbone)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.backbone_name = backbone
        self.depth_multiplier = depth_multiplier
        self.include_top = include_top
        self.num_classes = num_classes
        self.reduced_tail = _normalise_reduced_tail(reduced_tail)
        self.output_stride = output_stride
        self.dropout_rate = dropout_rate
        self.bn_momentum = bn_momentum
        self.init_stddev = init_stddev
        self.endpoint_names = None if endpoints is None else list(endpoints)
        self.image_shape = tuple(input_shape)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": self.backbone_name,
            "depth_multiplier": self.depth_multiplier,
            "include_top": self.include_top,
            "num_classes": self.num_classes,
            "reduced_tail": self.reduced_tail,
            "output_stride": self.output_stride,
            "dropout_rate": self.dropout_rate,
            "bn_momentum": self.bn_momentum,
            "init_stddev": self.init_stddev,
            "endpoints": self.endpoint_names,
            "input_shape": list(self.image_shape),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_backbone(backbone: str, /, **options) -> Backbone:
    """The one entry point: `build_backbone("mobilenet_v3_small", depth_multiplier=0.75, ...)`."""
    return Backbone(backbone=backbone, **options)
