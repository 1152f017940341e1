"""Image-to-image inference: model files, ``load_model``, ``nasflow enhance``, tiling, export, fast path.

Lives here: shipped and trained model files (``models``), the loaded-model API
(``inference``), image decoding and encoding (``imageio``), the ``enhance`` command's jobs,
exact tiling (``tiling``), TorchScript/ONNX export (``export``), CUDA graphs (``cudagraph``) and
the fused CPU fast path (``fastpath``).

May import every other engine layer (it reads run folders and rebuilds tasks); nothing below it
imports it, and it never imports a plugin by name.
"""
