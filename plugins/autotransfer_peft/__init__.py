"""Parameter-efficient strategies: LoRA and BitFit."""

__version__ = "0.1.0"
