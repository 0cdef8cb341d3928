"""SSDLite + MobileNetEdgeTPU 320x320 on COCO, the TF OD API recipe from scratch.

    ondevice-train --config=ondevice_vision/configs/ssdlite_mobilenet_edgetpu_320_coco.py:coco14,quant \
        --workdir=workdirs/ssdlite_edgetpu_quant --mode=train_and_eval
    ondevice-export --config=ondevice_vision/configs/ssdlite_mobilenet_edgetpu_320_coco.py:coco14,quant \
        --workdir=workdirs/ssdlite_edgetpu_quant --export_dir=exports/ssdlite_edgetpu_uint8 \
        --format=tflite --quantization=int8

Target (`:quant` only): 24.3 mAP on COCO14 minival, the OD API model zoo's uint8 Edge TPU model,
which was trained quantization-aware (`ssdlite_mobilenet_edgetpu_320x320_coco_quant.config`:
`graph_rewriter { quantization { delay: 30000 weight_bits: 8 activation_bits: 8 } }`, otherwise
the float recipe). `:quant` sets the same `train.quantization` (8 bits is what the int8 export
quantizes to); the int8 export then uses the
learned ranges. Without `:quant` the recipe trains in float and has no published target.
Taps: layer 18's expansion (384 ch, stride 16) and layer 23 (192 ch, stride 32); no reduced tail;
base learning rate 0.8.
"""

from ondevice_vision.configs import base_detection, common


def get_config(arg=None):
    words = common.config_words(arg, (*base_detection.COCO_WORDS, "quant"))
    config = base_detection.coco_config("mobilenet_edgetpu", ",".join(sorted(words - {"quant"})))
    config.model.reduced_tail = None
    config.train.base_learning_rate = 0.8
    if "quant" in words:
        q = config.train.quantization
        q.enabled = True
        q.delay = 30_000
    if "smoke" in words:
        base_detection.smoke(config)
        if "quant" in words:
            # Quantization-aware for the second half of the smoke run.
            config.train.quantization.delay = config.train.total_steps // 2
    return config
