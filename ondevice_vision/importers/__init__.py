"""Google's published TF1 checkpoints into our models (`ondevice-import`).

`od_api` maps Object Detection API SSDLite checkpoints onto SSDLiteDetector; slim ImageNet
checkpoints go into a backbone through `backbones.slim_checkpoint` (also behind
`train.imagenet_weights=PATH/model.ckpt`). `main` is the CLI and the only module that builds
task models.
"""
