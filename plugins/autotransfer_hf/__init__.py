"""Hugging Face transformers text backbones."""

__version__ = "0.1.0"
