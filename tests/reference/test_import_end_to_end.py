"""`ondevice-import` on a checkpoint the Object Detection API wrote, then eval and export on it."""

import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

from ondevice_vision.eval.evaluate import evaluate_checkpoint
from ondevice_vision.export.exported_model import load_exported_model
from ondevice_vision.export.main import export, label_map_and_palette
from ondevice_vision.tasks import load_trained_model
from tests.reference import reference_harness

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(eval_dir=None):
    from ondevice_vision.configs import ssdlite_mobilenet_v3_small_320_coco

    # The COCO recipe itself (90 category-id slots) on a two-image COCO folder.
    config = ssdlite_mobilenet_v3_small_320_coco.get_config()
    config.data.source = "coco_folder"
    config.data.eval_dir = eval_dir
    config.eval.batch_size = 2
    config.eval.num_visualizations = 0
    return config


def _coco_folder(directory, images):
    from PIL import Image

    os.makedirs(directory)
    entries = []
    for i, image in enumerate(images):
        Image.fromarray(image.astype(np.uint8)).save(os.path.join(directory, f"{i}.png"))
        entries.append({"id": i + 1, "file_name": f"{i}.png", "width": 320, "height": 320})
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [30, 40, 100, 120], "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 90, "bbox": [150, 60, 90, 200], "iscrowd": 0},
    ]
    categories = [{"id": 1, "name": "person"}, {"id": 90, "name": "toothbrush"}]
    with open(os.path.join(directory, "annotations.json"), "w") as f:
        json.dump({"images": entries, "annotations": annotations, "categories": categories}, f)
    return directory


@pytest.mark.slow
def test_import_then_eval_and_export(reference_dir, tmp_path):
    workdir = str(tmp_path / "imported")
    images = np.load(f"{reference_dir}/inputs.npz")["detection_images"]
    eval_dir = _coco_folder(str(tmp_path / "coco"), images[:2])
    source = f"{reference_dir}/ssdlite_v3_small/model.ckpt"
    # The CLI's own run (and its JSON report) is the doc test's below; here its function.
    from ondevice_vision.importers.main import import_checkpoint

    report = import_checkpoint(_config(), source, workdir)
    assert report["kind"] == "od_api" and report["assigned"] == 350
    assert os.path.exists(os.path.join(workdir, "config.json"))

    config = _config(eval_dir)
    # What the importer wrote is the reference's network: same outputs on the same images.
    model, path = load_trained_model(config, workdir, None)
    reference = reference_harness.load(reference_dir, "ssdlite_v3_small")
    np.testing.assert_allclose(
        model(images, training=False)["class_outputs"].numpy(),
        reference["class_predictions"],
        atol=1e-4,
    )

    metrics = evaluate_checkpoint(config, workdir)
    assert metrics["checkpoint"] == path and np.isfinite(metrics["AP"])

    label_map, _ = label_map_and_palette(config, workdir=workdir)
    export_dir = export(config, model, label_map, str(tmp_path / "export"), input_size=(128, 128))
    exported = load_exported_model(export_dir)
    outputs = exported.predict(images[:1, :128, :128].astype(np.uint8))
    assert outputs["detection_boxes"].shape[-1] == 4


def test_import_refuses_a_workdir_with_a_checkpoint(reference_dir, tmp_path):
    from ondevice_vision.importers.main import import_checkpoint

    source = f"{reference_dir}/ssdlite_v3_small/model.ckpt"
    import_checkpoint(_config(), source, str(tmp_path))
    with pytest.raises(FileExistsError, match="already holds a checkpoint"):
        import_checkpoint(_config(), source, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="model.ckpt"):
        import_checkpoint(_config(), str(tmp_path / "nothing"), str(tmp_path / "new"))


def test_od_api_checkpoint_into_a_model_of_other_classes(reference_dir, tmp_path):
    from ondevice_vision.backbones.slim_checkpoint import CheckpointMismatchError
    from ondevice_vision.importers.main import import_checkpoint

    config = _config()
    config.model.num_classes = 4
    with pytest.raises(CheckpointMismatchError, match=r"ClassPredictor/weights.*\(12 in all\)"):
        import_checkpoint(config, f"{reference_dir}/ssdlite_v3_small/model.ckpt", str(tmp_path))


def _doc_commands(doc: str) -> list[str]:
    """The commands of the first bash block of `doc`, continuation lines joined, comments cut."""
    with open(os.path.join(REPO, doc)) as f:
        block = re.search(r"```bash\n(.*?)```", f.read(), re.S).group(1)
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip()]


@pytest.mark.slow
def test_published_checkpoints_doc_commands_run_as_written_without_coco(reference_dir, tmp_path):
    """docs/published_checkpoints.md's commands, verbatim, in a folder laid out as the doc
    assumes (the zoo archive's folder holds the reference's V3-Large checkpoint) and with no
    dataset anywhere: the import and both exports work; only the evaluation needs COCO."""
    commands = _doc_commands("docs/published_checkpoints.md")
    assert [c.split()[0] for c in commands] == [
        "ondevice-import",
        "ondevice-eval",
        "ondevice-export",
        "ondevice-export",
    ]
    os.symlink(os.path.join(REPO, "ondevice_vision"), tmp_path / "ondevice_vision")
    archive = tmp_path / "ssdlite_mobilenet_v3_large_320x320_coco_2020_01_14"
    archive.mkdir()
    source = os.path.join(reference_dir, "ssdlite_v3_large")
    for name in os.listdir(source):
        if name.startswith("model.ckpt"):
            os.symlink(os.path.join(source, name), archive / name)
    (tmp_path / "empty_tfds").mkdir()
    env = dict(
        os.environ,
        TFDS_DATA_DIR=str(tmp_path / "empty_tfds"),
        HOME=str(tmp_path),  # no ~/tensorflow_datasets either
        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
    )
    results = {}
    for command in commands:
        run = subprocess.run(
            shlex.split(command), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        results[command.split()[0] + str(len(results))] = run
        if not command.startswith("ondevice-eval"):
            assert run.returncode == 0, (command, run.stderr[-3000:])
    # The importer prints what it assigned as JSON, last: every variable of the V3-Large model.
    from ondevice_vision import tasks
    from ondevice_vision.configs import ssdlite_mobilenet_v3_large_320_coco

    report = json.loads(results["ondevice-import0"].stdout.strip().splitlines()[-1])
    large = ssdlite_mobilenet_v3_large_320_coco.get_config("coco14")
    assert report["kind"] == "od_api"
    assert report["assigned"] == len(tasks.get_task(large).build_model(large).weights)
    evaluation = results["ondevice-eval1"]
    assert evaluation.returncode == 1
    assert evaluation.stderr.strip().splitlines()[-1].startswith("ERROR: ")

    labels = json.load(open(tmp_path / "workdirs/zoo_ssdlite_v3_large/labels.json"))["classes"]
    assert len(labels) == 90 and labels[0]["name"] == "person" and labels[0]["id"] == 1
    for export_dir, name in (
        ("exports/zoo_ssdlite_v3_large", "model.tflite"),
        ("exports/zoo_ssdlite_v3_large_saved_model", "saved_model.pb"),
    ):
        assert os.path.isfile(tmp_path / export_dir / name)
        exported = load_exported_model(str(tmp_path / export_dir))
        assert exported.label_map.names[89] == "toothbrush"
        outputs = exported.predict(np.zeros((1, 320, 320, 3), np.uint8))
        assert outputs["detection_boxes"].shape[-1] == 4
