"""The exported model: weights as safetensors plus a JSON config that ``predict`` reads.

Nothing here unpickles: weights load through safetensors only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import PluginError, UserError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save_weights(model, path: Path) -> None:
    from safetensors.torch import save_model

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_model(model, str(tmp), force_contiguous=True)  # channels-last weights are saved row-major
    tmp.replace(path)  # atomic: a crash never leaves half a checkpoint


def load_weights(model, path: Path) -> None:
    from safetensors.torch import load_model

    try:
        load_model(model, str(path), strict=True)
    except Exception as exc:  # truncated, corrupt, or weights of another architecture
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"{path}: cannot load these weights ({reason}); the file is damaged or belongs to another model: "
            "export the model again (autotransfer export) or run the search again"
        ) from None


def write_model(model_dir: Path, model, config: dict) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    save_weights(model, model_dir / WEIGHTS)
    (model_dir / CONFIG).write_text(json.dumps(config, indent=2))


class Predictions(list):
    """The rows ``predict`` returns (one dict per input it could read), and ``skipped``: one line per
    input it could not read (``skipped NAME: why``), as the task named them."""

    def __init__(self, rows=(), skipped=()) -> None:
        super().__init__(rows)
        self.skipped = list(skipped)


@dataclass
class LoadedModel:
    model: Any
    config: dict
    task: Any
    device: Any

    def predict(self, inputs: Sequence[str], options=None) -> Predictions:
        """One dict per input the task could read: the item, its predicted label and the probability.

        Inputs that cannot be read (missing, damaged, empty) do not stop the others: the task skips
        each with a warning on stderr, and the result's ``skipped`` lists them; when none can be read,
        a ``UserError``. ``options``: a ``TaskOptions`` (a text file's encoding, a table's text column).
        """
        from .specs import TaskOptions

        dataset = self.task.load_unlabeled([str(i) for i in inputs], options or TaskOptions())
        conf, label = self.probabilities(dataset).max(1)
        classes = self.config["classes"]
        rows = [
            {"input": item, "label": classes[k], "probability": round(c, 4)}
            for item, c, k in zip(dataset.items, conf.tolist(), label.tolist())
        ]
        return Predictions(rows, dataset.notes)

    def probabilities(self, dataset, indices: list[int] | None = None):
        """Class probabilities of the items of ``dataset`` at ``indices`` (default: every one; only
        those are decoded)."""
        from .training.batches import to_device
        from .training.inference import infer

        preprocessing = self.config["preprocessing"]
        indices = list(range(len(dataset))) if indices is None else list(indices)
        encoded = to_device(dataset.encode(indices, preprocessing), self.device)
        self.model.eval()
        return infer(
            lambda x: self.model(dataset.prepare(x, preprocessing, train=False)).float().softmax(1),
            encoded,
            device=self.device,
        )


@dataclass
class LoadedEnsemble(LoadedModel):
    """An ensemble a search exported (``--ensemble``): its members' probabilities, averaged with the
    weights its config.json gives."""

    members: list[tuple[float, LoadedModel]] = field(default_factory=list)

    def probabilities(self, dataset, indices: list[int] | None = None):
        return sum(weight * member.probabilities(dataset, indices) for weight, member in self.members)


def load_model(
    model_dir: str, *, device: str = "cpu", plugins: Sequence[str] = (), trust_pickle: bool = False, host=None
) -> LoadedModel:
    """The exported model in ``model_dir``, ready to predict. Its backbone and task come from the
    plugins that registered them: ``host`` (else the default host, with ``plugins`` added); when the
    backbone's plugin (``backbone_plugin`` in config.json) is not loaded, the one-line error names it."""
    import torch

    from .backbone import TransferModel, place
    from .plugins import default_host

    root = Path(model_dir)
    config_path = root / CONFIG
    if not config_path.is_file():
        raise UserError(f"{model_dir}: no {CONFIG}; give the model/ folder a search wrote")
    config = json.loads(config_path.read_text())
    weights = root / WEIGHTS
    if not weights.is_file() and "ensemble" not in config:
        pickles = sorted(root.glob("*.pt")) + sorted(root.glob("*.pth")) + sorted(root.glob("*.bin"))
        if pickles and not trust_pickle:
            raise UserError(
                f"{pickles[0]}: refusing to load a pickle checkpoint (it can run code); "
                "convert it to safetensors, or pass --trust-pickle if you trust its source"
            )
        if not pickles:
            raise UserError(f"{model_dir}: no {WEIGHTS}; give the model/ folder a search wrote")
    host = host or default_host(plugins)
    if "ensemble" in config:  # each member is a model folder of its own
        members = [
            (float(m["weight"]), load_model(str(root / m["path"]), device=device, host=host))
            for m in config["ensemble"]
        ]
        first = members[0][1]
        return LoadedEnsemble(None, config, first.task, first.device, members)
    try:  # the plugins that registered the backbone and the task must be loaded
        spec = host.backbone(config["backbone"], registered_by=config.get("backbone_plugin"))
    except PluginError:
        raise
    except UserError as exc:
        raise UserError(f"{model_dir}: {exc}") from None
    if config["task"] not in host.registry.names("tasks"):
        raise UserError(
            f"{model_dir}: its task {config['task']!r} is registered by no loaded plugin; install the plugin "
            "that registers it, or load it with `autotransfer --plugin FILE_OR_FOLDER ...`"
        )
    task = host.registry.get("tasks", config["task"])
    backbone = spec.build(pretrained=False)
    model = TransferModel(backbone, len(config["classes"]))
    if weights.is_file():
        load_weights(model, weights)
    else:
        state = torch.load(pickles[0], map_location="cpu", weights_only=False)
        model.load_state_dict(state, strict=True)
    torch_device = torch.device(device)
    return LoadedModel(place(model, torch_device).eval(), config, task, torch_device)
