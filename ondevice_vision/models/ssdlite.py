"""The SSDLite detector: backbone taps, four extra layers and depthwise box / class predictors.

Follows the TF Object Detection API's `ssd_mobilenet_v3` feature extractor and its convolutional
box predictor with `use_depthwise: true` (docs/reference_facts.md). Outputs are raw: box encodings
[B, A, 4] and class logits [B, A, K + 1] with the background in column 0. The detector owns its
inference contract, as keras-hub's RetinaNet does: `detect(outputs)` (decoding + NMS with the
anchors of heads/anchors.py's `anchor_boxes`); target assignment and losses live in heads/.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from ondevice_vision.backbones import build_backbone
from ondevice_vision.backbones.batch_norm import BatchNormalization
from ondevice_vision.heads import anchors as anchors_lib
from ondevice_vision.heads import postprocess

EXTRA_DEPTHS = (512, 256, 256, 128)


def _jsonable(options: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


class _HeadBuilder:
    def __init__(self, bn_momentum, bn_epsilon, init_stddev, feature_init_stddev=None):
        self.bn_momentum = bn_momentum
        self.bn_epsilon = bn_epsilon
        self.predictor_init = lambda: keras.initializers.RandomNormal(stddev=init_stddev)
        if feature_init_stddev is None:
            self.init = self.predictor_init
        else:
            # The OD API initialises the extra layers as the feature extractor they belong to.
            self.init = lambda: keras.initializers.TruncatedNormal(stddev=feature_init_stddev)

    def bn_relu6(self, x, name):
        x = BatchNormalization(
            momentum=self.bn_momentum, epsilon=self.bn_epsilon, name=name + "_bn"
        )(x)
        return layers.ReLU(6.0, name=name + "_relu6")(x)

    def conv1x1(self, x, filters, name):
        x = layers.Conv2D(filters, 1, use_bias=False, kernel_initializer=self.init(), name=name)(x)
        return self.bn_relu6(x, name)

    def depthwise(self, x, stride, name, initializer=None):
        x = layers.DepthwiseConv2D(
            3,
            strides=stride,
            padding="same",
            use_bias=False,
            depthwise_initializer=initializer or self.init(),
            name=name,
        )(x)
        return self.bn_relu6(x, name)

    def extra_layer(self, x, depth, index):
        name = f"extra_{index}"
        x = self.conv1x1(x, depth // 2, name + "_1x1_reduce")
        x = self.depthwise(x, 2, name + "_3x3_s2_depthwise")
        return self.conv1x1(x, depth, name + "_1x1")

    def predictor(self, x, outputs_per_anchor, num_anchors, name, bias_init=0.0):
        x = self.depthwise(x, 1, name + "_depthwise", self.predictor_init())
        x = layers.Conv2D(
            num_anchors * outputs_per_anchor,
            1,
            kernel_initializer=self.predictor_init(),
            bias_initializer=keras.initializers.Constant(bias_init),
            name=name + "_conv",
        )(x)
        return layers.Reshape((-1, outputs_per_anchor), name=name + "_reshape")(x)


@keras.saving.register_keras_serializable(package="ondevice_vision")
class SSDLiteDetector(keras.Model):
    """Functional SSDLite model; outputs {"box_outputs": [B,A,4], "class_outputs": [B,A,K+1]}."""

    def __init__(
        self,
        backbone: str = "mobilenet_v3_large",
        num_classes: int = 90,
        depth_multiplier: float = 1.0,
        reduced_tail="detection",
        extra_depths=EXTRA_DEPTHS,
        anchors_per_location=(3, 6, 6, 6, 6, 6),
        class_bias_init: float = -4.6,
        init_stddev: float = 0.03,
        feature_init_stddev: float | None = None,
        head_bn_momentum: float = 0.97,
        backbone_bn_momentum: float = 0.97,
        bn_epsilon: float = 1e-3,
        input_shape=(None, None, 3),
        anchor_options=None,
        postprocess_options=None,
        **kwargs,
    ):
        anchors_per_location = tuple(int(a) for a in anchors_per_location)
        extra_depths = tuple(int(d) for d in extra_depths)
        if len(anchors_per_location) != 2 + len(extra_depths):
            raise ValueError(
                f"SSDLite: {len(anchors_per_location)} anchor layers but 2 backbone taps + "
                f"{len(extra_depths)} extra layers"
            )
        net = build_backbone(
            backbone,
            depth_multiplier=depth_multiplier,
            reduced_tail=reduced_tail,
            bn_momentum=backbone_bn_momentum,
            init_stddev=feature_init_stddev,
            endpoints=("ssd_c4", "ssd_c5"),
            input_shape=input_shape,
            name="backbone",
        )
        inputs = keras.Input(shape=tuple(input_shape), name="image")
        taps = net(inputs)
        h = _HeadBuilder(head_bn_momentum, bn_epsilon, init_stddev, feature_init_stddev)
        features = [taps["ssd_c4"], taps["ssd_c5"]]
        for index, depth in enumerate(extra_depths):
            features.append(h.extra_layer(features[-1], depth, index + 2))
        boxes, classes = [], []
        for level, (feature, count) in enumerate(zip(features, anchors_per_location, strict=True)):
            boxes.append(h.predictor(feature, 4, count, f"box_predictor_{level}"))
            classes.append(
                h.predictor(
                    feature, num_classes + 1, count, f"class_predictor_{level}", class_bias_init
                )
            )
        # Heads stay float32 under mixed precision: losses and NMS need the range.
        box_outputs = layers.Concatenate(axis=1, name="box_outputs", dtype="float32")(boxes)
        class_outputs = layers.Concatenate(axis=1, name="class_outputs", dtype="float32")(classes)
        kwargs.setdefault("name", f"ssdlite_{backbone}")
        super().__init__(
            inputs=inputs,
            outputs={"box_outputs": box_outputs, "class_outputs": class_outputs},
            **kwargs,
        )
        self.backbone_name = backbone
        self.num_classes = num_classes
        self.depth_multiplier = depth_multiplier
        self.reduced_tail = reduced_tail
        self.extra_depths = extra_depths
        self.anchors_per_location = anchors_per_location
        self.class_bias_init = class_bias_init
        self.init_stddev = init_stddev
        self.feature_init_stddev = feature_init_stddev
        self.head_bn_momentum = head_bn_momentum
        self.backbone_bn_momentum = backbone_bn_momentum
        self.bn_epsilon = bn_epsilon
        self.image_shape = tuple(input_shape)
        # The anchor generator, box coder and NMS settings come from the config (its
        # model.anchors and model.postprocess), the one place their values are written.
        if anchor_options is None or postprocess_options is None:
            raise ValueError(
                "SSDLiteDetector needs anchor_options and postprocess_options (a detection "
                "config's model.anchors and model.postprocess; build_detector passes them)"
            )
        self.anchor_options = dict(anchor_options)
        self.postprocess_options = dict(postprocess_options)

    @property
    def backbone(self):
        return self.get_layer("backbone")

    @property
    def num_feature_maps(self) -> int:
        """The predictor layers: two backbone taps and the extra layers (anchors.anchor_boxes)."""
        return 2 + len(self.extra_depths)

    @property
    def box_scale_factors(self) -> tuple[float, ...]:
        return tuple(float(s) for s in self.anchor_options["box_scale_factors"])

    def detect(self, outputs, input_size):
        """Raw outputs at `input_size` -> decoded boxes after NMS (see postprocess.py)."""
        o = self.postprocess_options
        return postprocess.postprocess(
            outputs["box_outputs"],
            outputs["class_outputs"],
            tf.constant(
                anchors_lib.anchor_boxes(self.anchor_options, self.num_feature_maps, input_size)
            ),
            score_threshold=o["score_threshold"],
            iou_threshold=o["iou_threshold"],
            max_detections_per_class=o["max_detections_per_class"],
            max_total_detections=o["max_detections"],
            scale_factors=self.box_scale_factors,
        )

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": self.backbone_name,
            "num_classes": self.num_classes,
            "depth_multiplier": self.depth_multiplier,
            "reduced_tail": self.reduced_tail,
            "extra_depths": list(self.extra_depths),
            "anchors_per_location": list(self.anchors_per_location),
            "class_bias_init": self.class_bias_init,
            "init_stddev": self.init_stddev,
            "feature_init_stddev": self.feature_init_stddev,
            "head_bn_momentum": self.head_bn_momentum,
            "backbone_bn_momentum": self.backbone_bn_momentum,
            "bn_epsilon": self.bn_epsilon,
            "input_shape": list(self.image_shape),
            "anchor_options": _jsonable(self.anchor_options),
            "postprocess_options": dict(self.postprocess_options),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_detector(model_config) -> SSDLiteDetector:
    """From the `model` section of a detection config."""
    anchor_options = model_config.anchors.to_dict()
    per_location = anchors_lib.anchors_per_location(
        num_layers=2 + len(model_config.extra_depths),
        aspect_ratios=tuple(anchor_options["aspect_ratios"]),
        interpolated_scale_aspect_ratio=anchor_options["interpolated_scale_aspect_ratio"],
        reduce_boxes_in_lowest_layer=anchor_options["reduce_boxes_in_lowest_layer"],
    )
    return SSDLiteDetector(
        backbone=model_config.backbone,
        num_classes=model_config.num_classes,
        depth_multiplier=model_config.depth_multiplier,
        reduced_tail=model_config.reduced_tail,
        extra_depths=tuple(model_config.extra_depths),
        anchors_per_location=per_location,
        class_bias_init=model_config.class_bias_init,
        init_stddev=model_config.init_stddev,
        feature_init_stddev=model_config.get("feature_init_stddev"),
        head_bn_momentum=model_config.head_bn_momentum,
        backbone_bn_momentum=model_config.backbone_bn_momentum,
        anchor_options=anchor_options,
        postprocess_options=model_config.postprocess.to_dict(),
    )
