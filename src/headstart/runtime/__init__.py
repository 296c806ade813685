"""The torch-free runtime: predict with an ONNX export using ONNX Runtime, NumPy and Pillow
only (``pip install headstart[runtime]``), so a model can go to work without a multi-GB
PyTorch install. Nothing under this package imports torch (a test proves it)."""
