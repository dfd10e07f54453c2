"""Domain adaptation and multi-task strategies."""

__version__ = "0.1.0"
