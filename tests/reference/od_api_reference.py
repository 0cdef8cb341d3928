"""Runs the TF Object Detection API and slim (TF1 graph mode) and writes what the tests compare.

Test-only; run as its own process (`python od_api_reference.py OUT_DIR GROUP`, see
reference_harness.py), never
imported by the test process or the product. For every detection config and slim classifier it
builds the reference model, draws random weights and batch-norm statistics (so nothing is
trivially zero or one), runs it on the inputs in OUT_DIR/inputs.npz and writes

    OUT_DIR/<name>/model.ckpt*   the TF1 checkpoint, as the zoo / slim releases store theirs
    OUT_DIR/<name>/outputs.npz   raw outputs, anchors, post-processed detections, losses
"""

from __future__ import annotations

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bootstrap  # noqa: E402  (must run before TensorFlow is imported)

tf = bootstrap.install()

import numpy as np  # noqa: E402
import tf_slim as slim  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from nets.mobilenet import mobilenet_v3  # noqa: E402
from object_detection.builders import model_builder  # noqa: E402
from object_detection.protos import model_pb2  # noqa: E402

DETECTION = {
    "ssdlite_v3_large": "ssdlite_mobilenet_v3_large_320x320_coco.model.config",
    "ssdlite_v3_small": "ssdlite_mobilenet_v3_small_320x320_coco.model.config",
    "ssdlite_edgetpu": "ssdlite_mobilenet_edgetpu_320x320_coco.model.config",
}
# The slim networks of the eight published ImageNet checkpoints: (builder, depth multiplier).
CLASSIFIERS = {
    "v3_large_1.0": ("large", 1.0),
    "v3_large_0.75": ("large", 0.75),
    "v3_small_1.0": ("small", 1.0),
    "v3_small_0.75": ("small", 0.75),
    "v3_large_minimalistic_1.0": ("large_minimalistic", 1.0),
    "v3_small_minimalistic_1.0": ("small_minimalistic", 1.0),
    "edgetpu_1.0": ("edge_tpu", 1.0),
    "edgetpu_0.75": ("edge_tpu", 0.75),
}
# Slim's number of the head conv (the 960/576/1280 conv before pooling): stem, blocks, head.
HEAD_LAYER = {
    "large": 17,
    "large_minimalistic": 17,
    "small": 13,
    "small_minimalistic": 13,
    "edge_tpu": 24,
}
# Emulates the quantisation-range variables of a fake-quant trained checkpoint (the EdgeTPU
# SSDLite of the zoo), which an importer has to skip.
FAKE_QUANT_VARIABLES = (
    "FeatureExtractor/MobilenetEdgeTPU/Conv/act_quant/min",
    "FeatureExtractor/MobilenetEdgeTPU/Conv/act_quant/max",
    "FeatureExtractor/MobilenetEdgeTPU/Conv/weights_quant/min",
    "FeatureExtractor/MobilenetEdgeTPU/Conv/weights_quant/max",
)


def load_model_config(file_name, height=None, width=None):
    config = model_pb2.DetectionModel()
    with open(os.path.join(HERE, "configs", file_name)) as f:
        text = f.read()
    text_format.Merge(text.split("model {", 1)[1].rsplit("}", 1)[0], config)
    # The padded (static-shape) NMS is a pure-TF loop that takes minutes on a CPU for 90
    # classes; the dynamic one selects the same boxes.
    config.ssd.post_processing.batch_non_max_suppression.use_static_shapes = False
    if height:
        config.ssd.image_resizer.fixed_shape_resizer.height = height
        config.ssd.image_resizer.fixed_shape_resizer.width = width
    return config


def randomise(sess, rng):
    """Weights at unit gain (so activations neither vanish nor explode through the depth) and
    batch-norm parameters and statistics away from their 0 / 1 initial values."""
    feed, initializers = {}, []
    for var in tf.compat.v1.global_variables():
        shape = var.shape.as_list()
        leaf = var.op.name.rsplit("/", 1)[-1]
        if leaf in ("weights", "depthwise_weights", "kernel"):
            fan_in = shape[0] * shape[1] * (1 if leaf == "depthwise_weights" else shape[2])
            value = rng.normal(0.0, np.sqrt(1.0 / fan_in), shape)
        elif leaf in ("biases", "beta", "moving_mean"):
            value = rng.normal(0.0, 0.2, shape)
        elif leaf in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            continue
        # Feeding the initial value of each variable's initializer: one session run for all.
        feed[var.initializer.inputs[1]] = value.astype(np.float32)
        initializers.append(var.initializer)
    sess.run(initializers, feed)


def one_hot(classes, depth):
    out = np.zeros((len(classes), depth), np.float32)
    out[np.arange(len(classes)), classes] = 1.0
    return out


_START = time.time()


def _log(message):
    print(f"[reference {time.time() - _START:6.1f}s] {message}", flush=True)


def run_detection(name, file_name, inputs, out_dir, rng):
    _log(f"{name}: build")
    graph = tf.Graph()
    with graph.as_default():
        model = model_builder.build(load_model_config(file_name), is_training=False)
        images = tf.constant(inputs["detection_images"])
        preprocessed, true_shapes = model.preprocess(images)
        predictions = model.predict(preprocessed, true_shapes)
        detections = model.postprocess(predictions, true_shapes)
        num_classes = model.num_classes
        boxes, classes, crowd = [], [], []
        for i in range(len(inputs["detection_images"])):
            n = int(inputs["gt_counts"][i])
            boxes.append(tf.constant(inputs["gt_boxes"][i, :n]))
            classes.append(tf.constant(one_hot(inputs["gt_classes"][i, :n], num_classes)))
            crowd.append(tf.constant(inputs["gt_is_crowd"][i, :n]))
        model.provide_groundtruth(boxes, classes, groundtruth_is_crowd_list=crowd)
        losses = model.loss(predictions, true_shapes)
        if name == "ssdlite_v3_large":
            # A real training checkpoint's extras: the global step and momentum slots (created
            # as minimize() would, without the cost of building the gradients).
            tf.compat.v1.train.get_or_create_global_step()
            optimizer = tf.compat.v1.train.MomentumOptimizer(0.1, 0.9)
            optimizer._create_slots(tf.compat.v1.trainable_variables())
        if name == "ssdlite_edgetpu":
            for var_name in FAKE_QUANT_VARIABLES:
                tf.compat.v1.get_variable(var_name, shape=[], initializer=tf.zeros_initializer())
        trainable = sum(int(np.prod(v.shape.as_list())) for v in tf.compat.v1.trainable_variables())
        _log(f"{name}: graph built")
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            randomise(sess, rng)
            _log(f"{name}: randomised")
            fetch = {
                "anchors": predictions["anchors"],
                "box_encodings": predictions["box_encodings"],
                "class_predictions": predictions["class_predictions_with_background"],
                "detection_boxes": detections["detection_boxes"],
                "detection_scores": detections["detection_scores"],
                "detection_classes": detections["detection_classes"],
                "num_detections": detections["num_detections"],
                "localization_loss": losses["Loss/localization_loss"],
                "classification_loss": losses["Loss/classification_loss"],
            }
            values = sess.run(fetch)
            _log(f"{name}: ran")
            directory = os.path.join(out_dir, name)
            os.makedirs(directory, exist_ok=True)
            tf.compat.v1.train.Saver().save(
                sess, os.path.join(directory, "model.ckpt"), write_meta_graph=False
            )
    values["trainable_parameters"] = np.int64(trainable)
    np.savez(os.path.join(out_dir, name, "outputs.npz"), **values)


def run_anchors_only(name, file_name, height, width, out_dir):
    """Anchors of a non-square input: they depend on the feature map sizes and the image shape."""
    graph = tf.Graph()
    with graph.as_default():
        model = model_builder.build(load_model_config(file_name, height, width), is_training=False)
        images = tf.zeros([1, height, width, 3])
        preprocessed, true_shapes = model.preprocess(images)
        predictions = model.predict(preprocessed, true_shapes)
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            anchors = sess.run(predictions["anchors"])
    os.makedirs(os.path.join(out_dir, name), exist_ok=True)
    np.savez(os.path.join(out_dir, name, "outputs.npz"), anchors=anchors)


def run_classifier(name, builder, multiplier, images, out_dir, rng):
    graph = tf.Graph()
    with graph.as_default():
        net = getattr(mobilenet_v3, builder)
        with slim.arg_scope(mobilenet_v3.training_scope(is_training=False)):
            # finegrain_classification_mode keeps the 1280/1024 layer wide below 1.0, as the
            # published 0.75 checkpoints have it.
            logits, endpoints = net(
                tf.constant(images / 127.5 - 1.0, tf.float32),
                num_classes=1001,
                depth_multiplier=multiplier,
                finegrain_classification_mode=multiplier < 1.0,
            )
        # Global pooling averages most of the image away; the head conv's map (slim numbers it
        # after the blocks and the stem) is compared as well.
        head = endpoints[f"layer_{HEAD_LAYER[builder]}"]
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            randomise(sess, rng)
            values = sess.run({"logits": logits, "head": head})
            directory = os.path.join(out_dir, name)
            os.makedirs(directory, exist_ok=True)
            tf.compat.v1.train.Saver().save(
                sess, os.path.join(directory, "model.ckpt"), write_meta_graph=False
            )
    np.savez(os.path.join(out_dir, name, "outputs.npz"), **values)


# DeepLab's `mobilenet_v3_{large,small}_seg` (research/deeplab/core/feature_extractor.py): these
# slim spec entries get half their outputs, and the given expansion width (None: unchanged).
DEEPLAB_SEG_HALVED = {
    "large": ((13, 336), (14, 480), (15, 480), (16, None)),
    "small": ((9, 144), (10, 288), (11, 288), (12, None)),
}
# Slim endpoints DeepLab's LR-ASPP reads: the last layer it builds (its final endpoint) and the
# stride-8 feature of the decoder (`networks_to_feature_maps[...][8]`).
DEEPLAB_ENDPOINTS = {
    "large": ("layer_17", "layer_7/depthwise_output"),
    "small": ("layer_13", "layer_4/depthwise_output"),
}
DEEPLAB_CROP = 129  # image_pooling_crop_size for the test (the release uses 769)
DEEPLAB_CLASSES = 19


def _deeplab_seg_conv_defs(builder):
    import copy

    conv_defs = copy.deepcopy(
        mobilenet_v3.V3_LARGE if builder == "large" else mobilenet_v3.V3_SMALL
    )
    spec = conv_defs["spec"]
    for index, expansion in DEEPLAB_SEG_HALVED[builder]:
        spec[index].params["num_outputs"] = spec[index].params["num_outputs"] // 2
        if expansion is not None:
            factor = expansion / spec[index - 1].params["num_outputs"]
            spec[index].params["expansion_size"] = mobilenet_v3.expand_input(factor)
    return conv_defs


def _scaled(size, scale):
    """DeepLab's scale_dimension: int((size - 1) * scale + 1)."""
    return int((size - 1) * scale + 1)


def _deeplab_lraspp_head(features, low, height, width):
    """DeepLab's LR-ASPP head, written from its documented facts (docs/reference_facts.md):
    model.py `extract_features` with aspp_with_squeeze_and_excitation, image_se_uses_qsigmoid,
    no concat projection; `refine_by_decoder` with sum merge and decoder_output_is_logits;
    variables under the scopes DeepLab uses, resizes with align_corners=True."""
    resize = tf.compat.v1.image.resize_bilinear
    pool = _scaled(DEEPLAB_CROP, 1.0 / 32)
    gate = slim.avg_pool2d(features, [pool, pool], [4, 5], padding="VALID")
    gate = slim.conv2d(
        gate,
        128,
        1,
        activation_fn=lambda x: tf.nn.relu6(x + 3) * 0.16667,
        normalizer_fn=None,
        scope="image_pooling",
    )
    gate = resize(gate, [_scaled(height, 1 / 32), _scaled(width, 1 / 32)], align_corners=True)
    semantic = slim.conv2d(
        features,
        128,
        1,
        activation_fn=tf.nn.relu,
        normalizer_fn=slim.batch_norm,
        normalizer_params={"decay": 0.9997, "epsilon": 1e-5, "scale": True, "is_training": False},
        scope="aspp0",
    )
    gated = semantic * gate
    with tf.compat.v1.variable_scope("decoder"):
        size = [_scaled(height, 1 / 8), _scaled(width, 1 / 8)]
        projected = slim.conv2d(
            low,
            DEEPLAB_CLASSES,
            1,
            activation_fn=None,
            normalizer_fn=None,
            scope="feature_projection0",
        )
        projected = resize(projected, size, align_corners=True)
        gated = resize(gated, size, align_corners=True)
        logits = slim.conv2d(
            gated,
            DEEPLAB_CLASSES,
            1,
            activation_fn=None,
            normalizer_fn=None,
            scope="decoder_conv0",
        )
        logits = logits + projected
    return resize(logits, [height, width], align_corners=True)


def run_deeplab_lraspp(name, builder, images, out_dir, rng):
    """DeepLab's LR-ASPP of the Cityscapes release at output stride 32: slim's MobileNetV3 with
    DeepLab's segmentation changes (the backbone is real slim code) and the head from the facts."""
    graph = tf.Graph()
    height, width = images.shape[1:3]
    with graph.as_default():
        x = tf.constant(images / 127.5 - 1.0, tf.float32)
        high_name, low_name = DEEPLAB_ENDPOINTS[builder]
        with slim.arg_scope(mobilenet_v3.training_scope(is_training=False)):
            features, endpoints = mobilenet_v3.mobilenet_base(
                x,
                conv_defs=_deeplab_seg_conv_defs(builder),
                output_stride=32,
                final_endpoint=high_name,
                scope="MobilenetV3",
            )
        low = endpoints[low_name]
        logits = _deeplab_lraspp_head(features, low, height, width)
        # A training checkpoint's extras that an importer skips: the step and an EMA shadow.
        tf.compat.v1.train.get_or_create_global_step()
        tf.compat.v1.get_variable(
            "aspp0/weights/ExponentialMovingAverage", shape=[1], initializer=tf.zeros_initializer()
        )
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            randomise(sess, rng)
            values = sess.run({"logits": logits, "high": features, "low": low})
            directory = os.path.join(out_dir, name)
            os.makedirs(directory, exist_ok=True)
            tf.compat.v1.train.Saver().save(
                sess, os.path.join(directory, "model.ckpt"), write_meta_graph=False
            )
    np.savez(os.path.join(out_dir, name, "outputs.npz"), **values)


def main(out_dir, group):
    """`group`: "detection" (the three SSDLite configs and the non-square anchors) or
    "classifiers" (the eight slim networks and DeepLab's two LR-ASPPs); the harness runs both at
    once."""
    start = time.time()
    inputs = dict(np.load(os.path.join(out_dir, "inputs.npz")))
    timings = {}
    if group == "detection":
        for index, (name, file_name) in enumerate(DETECTION.items()):
            t = time.time()
            run_detection(name, file_name, inputs, out_dir, np.random.default_rng(index))
            timings[name] = time.time() - t
        run_anchors_only("anchors_256x384", DETECTION["ssdlite_v3_large"], 256, 384, out_dir)
    elif group == "classifiers":
        for index, (name, (builder, multiplier)) in enumerate(CLASSIFIERS.items()):
            t = time.time()
            rng = np.random.default_rng(100 + index)
            run_classifier(name, builder, multiplier, inputs["classifier_images"], out_dir, rng)
            timings[name] = time.time() - t
        for index, builder in enumerate(("large", "small")):
            t = time.time()
            name = f"deeplab_lraspp_{builder}"
            rng = np.random.default_rng(200 + index)
            run_deeplab_lraspp(name, builder, inputs["segmentation_images"], out_dir, rng)
            timings[name] = time.time() - t
    else:
        raise SystemExit(f"unknown group {group!r}: detection or classifiers")
    timings["total"] = time.time() - start
    with open(os.path.join(out_dir, f"timings_{group}.json"), "w") as f:
        json.dump(timings, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
