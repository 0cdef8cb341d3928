"""Range and choice checks of a config, run before anything is built or read.

A value out of range otherwise surfaces late and far from its cause: `checkpoint_every_steps=0`
as a ZeroDivisionError after training with nothing saved, `batch_size=0` deep inside TensorFlow,
a negative learning rate not at all. Each problem names its key. The choices of every enum-valued
key are defined here, and the modules that act on them import them from here.
"""

from __future__ import annotations

TASKS = ("detection", "segmentation")
NAN_POLICIES = ("stop", "skip")
OPTIMIZERS = ("momentum", "adam")
SCHEDULES = ("cosine", "poly", "constant")
DATA_SERVICE_SHARDING = ("off", "dynamic")
INIT_CHECKPOINT_MODES = ("all_but_class_layers", "backbone", "strict")
# The Object Detection API's names of the first two.
INIT_CHECKPOINT_ALIASES = {"detection": "all_but_class_layers", "classification": "backbone"}
ANCHOR_MATCHING = ("train_step", "input_pipeline")
CLASS_INDEX = ("contiguous", "category_id")
CROWD_MATCHES = ("positive", "ignore")
COCO_UNLABELED = ("background", "ignore")
ATTENTION_POOLING = ("paper", "global")
LRASPP_VARIANTS = ("paper", "deeplab")
OUTPUT_STRIDES = (8, 16, 32)


def _one_of(choices) -> str:
    return "one of " + ", ".join(repr(c) for c in choices)


# (key, test, what it must be). Keys that a config lacks are skipped (older configs, other tasks).
_POSITIVE = "a positive integer"
_NON_NEGATIVE = "zero or more"
_RULES = [
    ("train.batch_size", lambda v: isinstance(v, int) and v > 0, _POSITIVE),
    ("train.total_steps", lambda v: isinstance(v, int) and v > 0, _POSITIVE),
    ("train.checkpoint_every_steps", lambda v: isinstance(v, int) and v > 0, _POSITIVE),
    ("train.log_every_steps", lambda v: isinstance(v, int) and v > 0, _POSITIVE),
    ("train.keep_checkpoints", lambda v: isinstance(v, int) and v > 0, _POSITIVE),
    ("train.steps_per_loop", lambda v: isinstance(v, int) and v >= 0, f"{_NON_NEGATIVE} (0: log)"),
    ("train.shuffle_buffer", lambda v: isinstance(v, int) and v > 0, _POSITIVE),
    ("train.jit_compile", lambda v: isinstance(v, bool), "True or False"),
    ("train.ordered_input", lambda v: isinstance(v, bool), "True or False"),
    ("train.warmup_steps", lambda v: isinstance(v, int) and v >= 0, _NON_NEGATIVE),
    (
        "train.bn_recalibration_steps",
        lambda v: isinstance(v, int) and v >= 0,
        f"{_NON_NEGATIVE} (0: off)",
    ),
    ("train.base_learning_rate", lambda v: v > 0, "positive"),
    ("train.warmup_learning_rate", lambda v: v >= 0, _NON_NEGATIVE),
    ("train.end_learning_rate", lambda v: v >= 0, _NON_NEGATIVE),
    ("train.weight_decay", lambda v: v >= 0, _NON_NEGATIVE),
    ("train.momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train.clip_gradient_norm", lambda v: v >= 0, f"{_NON_NEGATIVE} (0: off)"),
    ("train.quantization.delay", lambda v: isinstance(v, int) and v >= 0, _NON_NEGATIVE),
    ("train.quantization.ema_decay", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train.ema_decay", lambda v: 0 <= v < 1, "in [0, 1) (0: off)"),
    (
        "train.early_stopping_patience",
        lambda v: isinstance(v, int) and v >= 0,
        f"{_NON_NEGATIVE} (0: off)",
    ),
    ("train.early_stopping_min_delta", lambda v: v >= 0, _NON_NEGATIVE),
    ("eval.best_metric_mode", lambda v: v in ("max", "min"), "'max' or 'min'"),
    ("eval.score_threshold", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("eval.num_worst_images", lambda v: isinstance(v, int) and v >= 0, _NON_NEGATIVE),
    ("eval.batch_size", lambda v: isinstance(v, int) and v > 0, _POSITIVE),
    (
        "eval.every_steps",
        lambda v: isinstance(v, int) and v >= 0,
        f"{_NON_NEGATIVE} (0: at the end)",
    ),
    ("eval.max_images", lambda v: isinstance(v, int) and v >= 0, f"{_NON_NEGATIVE} (0: all)"),
    ("eval.num_visualizations", lambda v: isinstance(v, int) and v >= 0, _NON_NEGATIVE),
    ("model.num_classes", lambda v: isinstance(v, int) and v > 0, _POSITIVE),
    ("model.depth_multiplier", lambda v: v > 0, "positive"),
    ("model.input_size", lambda v: len(v) == 2 and min(v) > 0, "two positive sizes (H, W)"),
    ("data.crop_size", lambda v: len(v) == 2 and min(v) > 0, "two positive sizes (H, W)"),
    ("data.min_scale", lambda v: v > 0, "positive"),
    ("data.max_scale", lambda v: v > 0, "positive"),
    (
        "data.max_image_pixels",
        lambda v: isinstance(v, int) and v >= 0,
        f"{_NON_NEGATIVE} (0: no limit)",
    ),
    ("data.max_boxes", lambda v: isinstance(v, int) and v > 0, _POSITIVE),
    ("model.postprocess.score_threshold", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("model.postprocess.iou_threshold", lambda v: 0 < v <= 1, "in (0, 1]"),
    (
        "model.postprocess.max_detections_per_class",
        lambda v: isinstance(v, int) and v > 0,
        _POSITIVE,
    ),
    ("model.postprocess.max_detections", lambda v: isinstance(v, int) and v > 0, _POSITIVE),
    ("model.anchors.min_scale", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("model.anchors.max_scale", lambda v: 0 < v, "positive"),
    ("model.matcher.matched_threshold", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("model.matcher.unmatched_threshold", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("data.anchor_matching", lambda v: v in ANCHOR_MATCHING, _one_of(ANCHOR_MATCHING)),
    ("task", lambda v: v in TASKS, _one_of(TASKS)),
    ("train.nan_policy", lambda v: v in NAN_POLICIES, _one_of(NAN_POLICIES)),
    ("train.optimizer", lambda v: v in OPTIMIZERS, _one_of(OPTIMIZERS)),
    ("train.schedule", lambda v: v in SCHEDULES, _one_of(SCHEDULES)),
    (
        "train.data_service_sharding",
        lambda v: v in DATA_SERVICE_SHARDING,
        _one_of(DATA_SERVICE_SHARDING),
    ),
    (
        "train.init_checkpoint_mode",
        lambda v: v in INIT_CHECKPOINT_MODES or v in INIT_CHECKPOINT_ALIASES,
        _one_of([*INIT_CHECKPOINT_MODES, *INIT_CHECKPOINT_ALIASES]),
    ),
    ("data.class_index", lambda v: v in CLASS_INDEX, _one_of(CLASS_INDEX)),
    ("data.coco_unlabeled", lambda v: v in COCO_UNLABELED, _one_of(COCO_UNLABELED)),
    ("model.matcher.crowd_matches", lambda v: v in CROWD_MATCHES, _one_of(CROWD_MATCHES)),
    ("model.attention_pooling", lambda v: v in ATTENTION_POOLING, _one_of(ATTENTION_POOLING)),
    ("model.lraspp_variant", lambda v: v in LRASPP_VARIANTS, _one_of(LRASPP_VARIANTS)),
    ("model.output_stride", lambda v: v in OUTPUT_STRIDES, _one_of(OUTPUT_STRIDES)),
]


def _get(config, dotted: str):
    node = config
    for part in dotted.split("."):
        if part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def config_problems(config) -> list[str]:
    problems = []
    for key, ok, want in _RULES:
        try:
            value = _get(config, key)
        except KeyError:
            continue
        if value is None:
            continue
        try:
            good = bool(ok(value))
        except TypeError:
            good = False
        if not good:
            problems.append(f"config.{key}: must be {want}, got {value!r}")
    train = config.get("train")
    if train is not None and not problems and "warmup_steps" in train:
        if train.warmup_steps >= train.total_steps:
            problems.append(
                f"config.train.warmup_steps: must be below train.total_steps "
                f"({train.total_steps}), got {train.warmup_steps}"
            )
        patience = train.get("early_stopping_patience") or 0
        if patience and not config.get("eval", {}).get("every_steps"):
            problems.append(
                "config.train.early_stopping_patience: needs eval.every_steps > 0 (it counts "
                "evaluations during training)"
            )
    for low, high in (
        ("data.min_scale", "data.max_scale"),
        ("model.anchors.min_scale", "model.anchors.max_scale"),
        ("model.matcher.unmatched_threshold", "model.matcher.matched_threshold"),
    ):
        try:
            low_value, high_value = _get(config, low), _get(config, high)
        except KeyError:
            continue
        try:
            wrong = low_value is not None and high_value is not None and low_value > high_value
        except TypeError:
            wrong = False
        if wrong:
            problems.append(
                f"config.{low}: must not exceed config.{high} ({high_value}), got {low_value}"
            )
    return problems


def check_config(config) -> None:
    """ValueError naming every key that is out of range (one per line)."""
    problems = config_problems(config)
    if problems:
        raise ValueError("; ".join(problems))
