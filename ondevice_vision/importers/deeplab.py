"""DeepLab's LR-ASPP Cityscapes checkpoints into our Segmenter (`lraspp_variant="deeplab"`).

DeepLab's `deeplab_mnv3_{large,small}_cityscapes_trainfine` archives are TF1 checkpoints written
by DeepLab's `model.py` (tensorflow/models research/deeplab). Their variables, by name
(docs/reference_facts.md cites the source line of each):

    MobilenetV3/...                      the backbone, slim's names (backbones/slim_checkpoint.py)
    aspp0/weights, aspp0/BatchNorm/*     semantic 1x1 conv + batch norm   -> lraspp_semantic_conv/_bn
    image_pooling/{weights,biases}       attention 1x1 conv (gate input)  -> lraspp_attention_conv
    decoder/decoder_conv0/{weights,biases}       gated features -> logits -> lraspp_high_logits
    decoder/feature_projection0/{weights,biases} stride-8 feature -> logits -> lraspp_low_logits

Every variable of the model must be in the checkpoint with its shape, and every checkpoint
variable must be used, except training state (global step, optimizer slots, moving-average
shadows, as for the zoo's checkpoints): the error lists what does not match.
"""

from __future__ import annotations

from ondevice_vision.backbones import slim_checkpoint
from ondevice_vision.backbones.slim_checkpoint import ImportReport, layer_variable_names

# Our decoder layer -> DeepLab's scope.
HEAD_SCOPES = {
    "lraspp_semantic_conv": "aspp0",
    "lraspp_semantic_bn": "aspp0",
    "lraspp_attention_conv": "image_pooling",
    "lraspp_high_logits": "decoder/decoder_conv0",
    "lraspp_low_logits": "decoder/feature_projection0",
}
# Present in every DeepLab LR-ASPP checkpoint, absent from the other TF1 checkpoints we read.
_MARKERS = ("image_pooling/weights", "decoder/decoder_conv0/weights")


def segmenter_variable_names(segmenter) -> dict:
    """{DeepLab checkpoint name: our variable} for every variable of the segmenter."""
    names = slim_checkpoint.backbone_variable_names(segmenter.backbone)
    for layer in segmenter.layers:
        if layer.name == "backbone" or not layer.weights:
            continue
        if layer.name not in HEAD_SCOPES:
            raise slim_checkpoint.CheckpointMismatchError(
                f"no DeepLab counterpart for layer {layer.name!r}"
            )
        names.update(layer_variable_names(layer, HEAD_SCOPES[layer.name]))
    return names


def is_deeplab_checkpoint(path: str) -> bool:
    import tensorflow as tf

    names = {name for name, _ in tf.train.list_variables(path)}
    return all(marker in names for marker in _MARKERS)


def load_deeplab_checkpoint(segmenter, path: str, moving_averages: bool = False) -> ImportReport:
    """Assigns every variable of `segmenter` from DeepLab's LR-ASPP checkpoint at `path` (its
    ExponentialMovingAverage values where it has them, with `moving_averages`)."""
    if getattr(segmenter, "lraspp_variant", None) != "deeplab":
        raise ValueError(
            f"{path} is a DeepLab LR-ASPP checkpoint: it needs a config with "
            "model.lraspp_variant='deeplab' (e.g. lraspp_mobilenet_v3_large_cityscapes_deeplab.py)"
        )
    return slim_checkpoint.assign_from_checkpoint(
        segmenter_variable_names(segmenter), path, moving_averages=moving_averages
    )
