"""Which torch device a search trains on."""

from __future__ import annotations

from ..errors import UserError


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is visible; use --device cpu or auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"--device {name}: use auto, cpu, cuda or cuda:N")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"--device {name}: {exc}; use auto, cpu, cuda or cuda:N") from None
