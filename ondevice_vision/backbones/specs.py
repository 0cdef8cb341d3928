"""Block tables of the MobileNetV3 and MobileNetEdgeTPU releases (docs/reference_facts.md).

Expansions are factors of the block's input channels, as in the release and keras.applications,
so a depth multiplier and a reduced tail change every dependent width consistently.
"""

from __future__ import annotations

import dataclasses

RELU = "relu"
HSWISH = "hard_swish"


@dataclasses.dataclass(frozen=True)
class Block:
    """One inverted bottleneck (`kind="ibn"`) or fused inverted bottleneck (`kind="fused"`)."""

    kernel: int
    expansion: float
    out: int
    se: bool
    act: str
    stride: int
    kind: str = "ibn"
    # EdgeTPU's expansion-8 block between residual blocks has no shortcut although shapes allow it.
    residual: bool = True


@dataclasses.dataclass(frozen=True)
class Spec:
    stem_filters: int
    stem_act: str
    blocks: tuple[Block, ...]
    head_filters: int | None  # None: 6x the last block's output (MobileNetV3's 960/576 conv)
    head_act: str
    classifier_filters: int | None  # the 1280/1024 conv after pooling; None: logits on the pool
    # Taps by block index (0-based, stem excluded).
    ssd_c4_block: int  # its expansion output is SSDLite's C4 feature
    ssd_c5_block: int | None  # its output is SSDLite's C5 feature; None: the head conv
    lraspp_low_block: int  # its depthwise (or fused conv) output is LR-ASPP's stride-8 feature
    lraspp_high_block: int | None  # its output is LR-ASPP's high feature; None: the head conv
    keras_names: bool  # layer names follow keras.applications so its weight files load by name
    # Blocks whose outputs are halved by reduced_tail="detection" (and the head conv with them).
    detection_tail: tuple[int, ...] = ()
    # reduced_tail="segmentation" (DeepLab's *_seg backbones, the paper's RF2 for LR-ASPP): the
    # detection halving plus this block's expansion halved (V3-Large 672 -> 336).
    segmentation_expansion_block: int | None = None
    bn_epsilon: float = 1e-3


def _v3_large(minimal: bool) -> Spec:
    k5 = 3 if minimal else 5
    hs = RELU if minimal else HSWISH
    se = not minimal
    b = Block
    blocks = (
        b(3, 1, 16, False, RELU, 1),
        b(3, 4, 24, False, RELU, 2),
        b(3, 3, 24, False, RELU, 1),
        b(k5, 3, 40, se, RELU, 2),
        b(k5, 3, 40, se, RELU, 1),
        b(k5, 3, 40, se, RELU, 1),
        b(3, 6, 80, False, hs, 2),
        b(3, 2.5, 80, False, hs, 1),
        b(3, 2.3, 80, False, hs, 1),
        b(3, 2.3, 80, False, hs, 1),
        b(3, 6, 112, se, hs, 1),
        b(3, 6, 112, se, hs, 1),
        b(k5, 6, 160, se, hs, 2),
        b(k5, 6, 160, se, hs, 1),
        b(k5, 6, 160, se, hs, 1),
    )
    return Spec(
        stem_filters=16,
        stem_act=hs,
        blocks=blocks,
        head_filters=None,
        head_act=hs,
        classifier_filters=1280,
        ssd_c4_block=12,
        ssd_c5_block=None,
        lraspp_low_block=5,
        lraspp_high_block=None,
        keras_names=True,
        detection_tail=(12, 13, 14),
        segmentation_expansion_block=12,
    )


def _v3_small(minimal: bool) -> Spec:
    k5 = 3 if minimal else 5
    hs = RELU if minimal else HSWISH
    se = not minimal
    b = Block
    blocks = (
        b(3, 1, 16, se, RELU, 2),
        b(3, 72 / 16, 24, False, RELU, 2),
        b(3, 88 / 24, 24, False, RELU, 1),
        b(k5, 4, 40, se, hs, 2),
        b(k5, 6, 40, se, hs, 1),
        b(k5, 6, 40, se, hs, 1),
        b(k5, 3, 48, se, hs, 1),
        b(k5, 3, 48, se, hs, 1),
        b(k5, 6, 96, se, hs, 2),
        b(k5, 6, 96, se, hs, 1),
        b(k5, 6, 96, se, hs, 1),
    )
    return Spec(
        stem_filters=16,
        stem_act=hs,
        blocks=blocks,
        head_filters=None,
        head_act=hs,
        classifier_filters=1024,
        ssd_c4_block=8,
        ssd_c5_block=None,
        lraspp_low_block=2,
        lraspp_high_block=None,
        keras_names=True,
        detection_tail=(8, 9, 10),
        segmentation_expansion_block=8,
    )


def _edgetpu() -> Spec:
    b = Block
    blocks = (
        # Expansion 1: the fused block degenerates to its 1x1 linear projection.
        b(3, 1, 16, False, RELU, 1, kind="fused", residual=False),
        b(3, 8, 32, False, RELU, 2, kind="fused"),
        b(3, 4, 32, False, RELU, 1, kind="fused"),
        b(3, 4, 32, False, RELU, 1, kind="fused"),
        b(3, 4, 32, False, RELU, 1, kind="fused"),
        b(3, 8, 48, False, RELU, 2, kind="fused"),
        b(3, 4, 48, False, RELU, 1, kind="fused"),
        b(3, 4, 48, False, RELU, 1, kind="fused"),
        b(3, 4, 48, False, RELU, 1, kind="fused"),
        b(3, 8, 96, False, RELU, 2),
        b(3, 4, 96, False, RELU, 1),
        b(3, 4, 96, False, RELU, 1),
        b(3, 4, 96, False, RELU, 1),
        b(3, 8, 96, False, RELU, 1, residual=False),
        b(3, 4, 96, False, RELU, 1),
        b(3, 4, 96, False, RELU, 1),
        b(3, 4, 96, False, RELU, 1),
        b(5, 8, 160, False, RELU, 2),
        b(5, 4, 160, False, RELU, 1),
        b(5, 4, 160, False, RELU, 1),
        b(5, 4, 160, False, RELU, 1),
        b(3, 8, 192, False, RELU, 1),
    )
    return Spec(
        stem_filters=32,
        stem_act=RELU,
        blocks=blocks,
        head_filters=1280,
        head_act=RELU,
        classifier_filters=None,
        ssd_c4_block=16,
        ssd_c5_block=21,
        lraspp_low_block=8,
        lraspp_high_block=21,
        keras_names=False,
        detection_tail=(17, 18, 19, 20, 21),
        segmentation_expansion_block=17,
    )


SPECS = {
    "mobilenet_v3_large": lambda: _v3_large(minimal=False),
    "mobilenet_v3_small": lambda: _v3_small(minimal=False),
    "mobilenet_v3_large_minimalistic": lambda: _v3_large(minimal=True),
    "mobilenet_v3_small_minimalistic": lambda: _v3_small(minimal=True),
    "mobilenet_edgetpu": _edgetpu,
}


def get_spec(name: str) -> Spec:
    if name not in SPECS:
        raise ValueError(f"Unknown backbone {name!r}; choose one of {sorted(SPECS)}")
    return SPECS[name]()


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """The release's channel rounding: nearest multiple of 8, never more than 10% below `value`."""
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return int(new_value)
