"""Class weights and top-k pixel mining against losses computed by hand (numpy, loops)."""

import math

import numpy as np
import pytest

from ondevice_vision.configs import base_segmentation
from ondevice_vision.tasks import segmentation as segmentation_task
from ondevice_vision.tasks import segmentation_loss

IGNORE = 255


def _example():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (2, 3, 4, 3)).astype(np.float32)
    mask = np.array(
        [
            [[0, 1, 2, 2], [1, 1, IGNORE, 0], [2, 2, 2, 2]],
            [[IGNORE, IGNORE, 0, 0], [0, 0, 1, 1], [0, IGNORE, 2, 0]],
        ],
        np.uint8,
    )
    return logits, mask


def _hand_ce(logits, label):
    """-log softmax(logits)[label], written out."""
    exps = [math.exp(v) for v in logits]
    return -math.log(exps[label] / sum(exps))


def _hand_losses(logits, mask, weights, top_k):
    sums, norms = [], []
    for b in range(mask.shape[0]):
        pixel = []
        labelled = 0
        for i in range(mask.shape[1]):
            for j in range(mask.shape[2]):
                label = int(mask[b, i, j])
                if label == IGNORE:
                    pixel.append(0.0)
                    continue
                labelled += 1
                pixel.append(weights[label] * _hand_ce(logits[b, i, j], label))
        if top_k >= 1.0:
            sums.append(sum(pixel))
            norms.append(labelled)
        else:
            k = max(int(top_k * len(pixel)), 1)
            top = sorted(pixel, reverse=True)[:k]
            sums.append(sum(top))
            norms.append(sum(1 for v in top if v != 0.0))
    return np.array(sums), np.array(norms, np.float64)


@pytest.mark.parametrize(
    "weights, top_k",
    [(None, 1.0), ([0.5, 2.0, 1.5], 1.0), (None, 0.25), ([0.5, 2.0, 1.5], 0.5)],
)
def test_loss_equals_the_hand_computed_one(weights, top_k):
    logits, mask = _example()
    sums, norms = segmentation_loss.pixel_cross_entropy(logits, mask[..., None], weights, top_k)
    want_sums, want_norms = _hand_losses(logits, mask, weights or [1.0, 1.0, 1.0], top_k)
    np.testing.assert_allclose(sums.numpy(), want_sums, rtol=1e-5)
    np.testing.assert_allclose(norms.numpy(), want_norms)


def test_top_k_never_selects_ignored_pixels():
    """An image whose labelled pixels are fewer than k: the ignored ones (loss 0) add nothing."""
    logits, mask = _example()
    mask[0] = IGNORE
    mask[0, 0, 0] = 1
    sums, norms = segmentation_loss.pixel_cross_entropy(logits, mask, None, 0.5)
    assert norms.numpy()[0] == 1.0
    np.testing.assert_allclose(sums.numpy()[0], _hand_ce(logits[0, 0, 0], 1), rtol=1e-5)


def test_inverse_frequency_weights_from_counts():
    masks = [np.array([[0, 0, 0, 1]], np.uint8), np.array([[0, IGNORE, 2, 0]], np.uint8)]
    counts = segmentation_loss.class_pixel_counts(masks, 4)
    assert counts.tolist() == [5, 1, 1, 0]
    weights = segmentation_loss.inverse_frequency_weights(counts)
    # P = 7 labelled pixels over K = 3 present classes; class 3 has none and keeps 1.
    np.testing.assert_allclose(weights, [7 / 15, 7 / 3, 7 / 3, 1.0])


def test_class_weight_settings_are_checked():
    assert segmentation_loss.parse_class_weights("", 3) is None
    assert segmentation_loss.parse_class_weights("1, 2,0.5", 3) == [1.0, 2.0, 0.5]
    assert segmentation_loss.parse_class_weights((1, 2, 3), 3) == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="2 weights for 3 classes"):
        segmentation_loss.parse_class_weights("1,2", 3)
    with pytest.raises(ValueError, match="inverse_frequency"):
        segmentation_loss.parse_class_weights("inverse", 3)
    with pytest.raises(ValueError, match="top_k_percent_pixels"):
        segmentation_loss.check_top_k(0.0)


def test_inverse_frequency_is_computed_once_from_the_training_masks_and_logged(monkeypatch):
    config = base_segmentation.smoke(base_segmentation.segmentation_config("mobilenet_v3_small"))
    config.loss.class_weights = "inverse_frequency"
    config.data.num_train = 3
    logged = []
    monkeypatch.setattr(segmentation_loss, "log_class_weights", lambda *a: logged.append(a))
    _, label_map = segmentation_task.build_dataset(config, "train", 2)
    from ondevice_vision.data.segmentation_sources import load_segmentation_source

    source, _ = load_segmentation_source(config.data, "train")
    counts = segmentation_loss.class_pixel_counts(
        (ex["mask"] for ex in source.as_numpy_iterator()), config.model.num_classes
    )
    want = segmentation_loss.inverse_frequency_weights(counts)
    assert segmentation_task.class_weights(config) == want
    assert len(logged) == 1 and list(logged[0][1]) == list(label_map.names)
    # The training step uses them: the weighted loss of a batch equals the hand-weighted one.
    logits, mask = _example()
    mask = np.minimum(mask, config.model.num_classes - 1) * (mask != IGNORE) + IGNORE * (
        mask == IGNORE
    )
    sums, _ = segmentation_task.compute_losses(
        config, np.pad(logits, [[0, 0], [0, 0], [0, 0], [0, 1]]), {"mask": mask[..., None]}
    )
    hand, _ = _hand_losses(np.pad(logits, [[0, 0], [0, 0], [0, 0], [0, 1]]), mask, want, 1.0)
    np.testing.assert_allclose(sums["ce_loss"].numpy(), hand, rtol=1e-5)
