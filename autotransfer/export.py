"""The exported model: weights as safetensors plus a JSON config that ``predict`` reads.

Nothing here unpickles: weights load through safetensors only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save_weights(model, path: Path) -> None:
    from safetensors.torch import save_model

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_model(model, str(tmp))
    tmp.replace(path)  # atomic: a crash never leaves half a checkpoint


def load_weights(model, path: Path) -> None:
    from safetensors.torch import load_model

    missing, unexpected = load_model(model, str(path), strict=True)


def write_model(model_dir: Path, model, config: dict) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    save_weights(model, model_dir / WEIGHTS)
    (model_dir / CONFIG).write_text(json.dumps(config, indent=2))


@dataclass
class LoadedModel:
    model: Any
    config: dict
    task: Any
    device: Any

    def predict(self, inputs: Sequence[str]) -> list[dict]:
        """One dict per input: the item, its predicted label and the probability."""
        import torch

        from .train import count, take, to_device

        dataset = self.task.load_unlabeled([str(i) for i in inputs], self.config)
        preprocessing = self.config["preprocessing"]
        encoded = to_device(dataset.encode(list(range(len(dataset))), preprocessing), self.device)
        self.model.eval()
        rows = []
        with torch.no_grad():
            for start in range(0, count(encoded), 128):
                index = torch.arange(start, min(count(encoded), start + 128), device=self.device)
                x = dataset.prepare(take(encoded, index), preprocessing, train=False)
                probs = self.model(x).float().softmax(1)
                conf, label = probs.max(1)
                for i, (c, k) in enumerate(zip(conf.tolist(), label.tolist())):
                    rows.append(
                        {
                            "input": dataset.items[start + i],
                            "label": self.config["classes"][k],
                            "probability": round(c, 4),
                        }
                    )
        return rows


def load_model(
    model_dir: str, *, device: str = "cpu", plugins: Sequence[str] = (), trust_pickle: bool = False
) -> LoadedModel:
    import torch

    from .backbone import TransferModel
    from .plugins import get_host

    root = Path(model_dir)
    config_path = root / CONFIG
    if not config_path.is_file():
        raise UserError(f"{model_dir}: no {CONFIG}; give the model/ folder a search wrote")
    config = json.loads(config_path.read_text())
    weights = root / WEIGHTS
    if not weights.is_file():
        pickles = sorted(root.glob("*.pt")) + sorted(root.glob("*.pth")) + sorted(root.glob("*.bin"))
        if pickles and not trust_pickle:
            raise UserError(
                f"{pickles[0]}: refusing to load a pickle checkpoint (it can run code); "
                "convert it to safetensors, or pass --trust-pickle if you trust its source"
            )
        if not pickles:
            raise UserError(f"{model_dir}: no {WEIGHTS}; give the model/ folder a search wrote")
    host = get_host(plugins)
    spec = host.backbone(config["backbone"])
    task = host.registry.get("tasks", config["task"])
    backbone = spec.build(pretrained=False)
    model = TransferModel(backbone, len(config["classes"]))
    if weights.is_file():
        load_weights(model, weights)
    else:
        state = torch.load(pickles[0], map_location="cpu", weights_only=False)
        model.load_state_dict(state, strict=True)
    torch_device = torch.device(device)
    return LoadedModel(model.to(torch_device).eval(), config, task, torch_device)
