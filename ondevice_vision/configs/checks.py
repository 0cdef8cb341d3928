"""Range checks of a config, run before anything is built or read.

A value out of range otherwise surfaces late and far from its cause: `checkpoint_every_steps=0`
as a ZeroDivisionError after training with nothing saved, `batch_size=0` deep inside TensorFlow,
a negative learning rate not at all. Each problem names its key.
"""

from __future__ import annotations

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
    (
        "data.anchor_matching",
        lambda v: v in ("train_step", "input_pipeline"),
        "'train_step' or 'input_pipeline'",
    ),
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
    return problems


def check_config(config) -> None:
    """ValueError naming every key that is out of range (one per line)."""
    problems = config_problems(config)
    if problems:
        raise ValueError("; ".join(problems))
