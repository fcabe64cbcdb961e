"""evalgate: sandboxed remote evaluation of private ONNX models."""

__version__ = "0.1.0"
