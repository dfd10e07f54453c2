"""The plain reference loop: what a user writes today without autotransfer, for benchmarks to hold
the search against. An Optuna TPE study with a Hyperband pruner over learning rate, epochs and batch
size; the first candidate backbone, fully fine-tuned with AdamW from its pretrained weights at its
own resolution; a DataLoader that decodes every batch from the files every epoch; no cache, no cost
model, no micro-batching; ``study.optimize(timeout=budget)``. A real plain loop finishes the trial it
is in when time is up; here, so that a benchmark keeps its own schedule, a trial still running at the
budget stops at the next batch and the best epoch reached so far counts (a user killing the job and
taking the last best checkpoint). The split is the engine's (same seed, same fractions), so the test
examples are the same; the best epoch's weights are kept in memory and tested once at the end."""

from __future__ import annotations

import time

import optuna

from ...config import SearchConfig
from .methods import Outcome

BATCH_SIZES = (16, 32, 64)


class PlainLoop:
    def __init__(self, config: SearchConfig) -> None:
        self.config = config

    def run(self) -> Outcome:
        from ...engine.candidates import pick_backbones, pick_task
        from ...engine.devices import resolve_device
        from ...engine.problem import new_split
        from ...engine.run import quiet_optuna
        from ...plugins import default_host

        config = self.config
        host = default_host(config.plugins)
        task = pick_task(host, config)
        dataset = task.load(config.data, config.task_options)
        split = new_split(dataset, config)
        spec = pick_backbones(host, config, task.modality)[0]
        device = resolve_device(config.device)
        preprocessing = dict(spec.build(pretrained=False).preprocessing) | config.pinned_preprocessing
        loop = _Loop(dataset, split, spec, preprocessing, device, len(dataset.classes))
        loop.deadline = time.time() + config.budget if config.budget else float("inf")
        config.out_dir.mkdir(parents=True, exist_ok=True)
        with quiet_optuna():
            return self._search(config, task, split, spec, loop, device)

    def _search(self, config, task, split, spec, loop, device) -> Outcome:
        study = optuna.create_study(
            storage=f"sqlite:///{(config.out_dir / 'study.db').resolve()}",
            study_name="autotransfer",
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=config.seed),
            pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.max_epochs),
            load_if_exists=True,
        )
        study.optimize(
            loop.objective(config.max_epochs),
            n_trials=config.n_trials,
            timeout=config.budget,
            catch=(RuntimeError, ValueError),
        )
        best = None
        if loop.best_state is not None:
            loop.model.load_state_dict(loop.best_state)
            test = loop.accuracy(split["test"]) if split["test"] else None
            best = {
                "backbone": spec.name,
                "strategy": "plain full fine-tune",
                "val_metric": loop.best_value,
                "test_metric": test,
                "test_metric_name": task.metric,
            }
        return Outcome(best, study, len(split["train"]), str(device), len(split["test"]))


class _Loop:
    """The training a plain objective does: build, train, validate each epoch, keep the best."""

    def __init__(self, dataset, split, spec, preprocessing, device, n_classes) -> None:
        self.dataset, self.split, self.spec = dataset, split, spec
        self.preprocessing, self.device, self.n_classes = preprocessing, device, n_classes
        self.model, self.deadline = None, float("inf")
        self.best_state, self.best_value = None, float("-inf")

    def batches(self, indices, batch_size: int, shuffle: bool):
        """Decoded from the files, batch by batch, every time (what a DataLoader over files does)."""
        import torch

        from ...training.batches import to_device

        order = torch.randperm(len(indices)).tolist() if shuffle else range(len(indices))
        ordered = [indices[i] for i in order]
        for start in range(0, len(ordered), batch_size):
            chunk = ordered[start : start + batch_size]
            if shuffle and len(chunk) < 2:
                continue  # a batch of one breaks batch norm
            inputs = to_device(self.dataset.encode(chunk, self.preprocessing), self.device)
            labels = torch.tensor([self.dataset.labels[i] for i in chunk], device=self.device)
            yield self.dataset.prepare(inputs, self.preprocessing, train=shuffle), labels

    def accuracy(self, indices) -> float:
        import torch

        self.model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in self.batches(indices, 64, shuffle=False):
                correct += int((self.model(x).argmax(1) == y).sum())
        return correct / max(1, len(indices))

    def objective(self, max_epochs: int):
        import torch

        from ...backbone import TransferModel

        def objective(trial: optuna.Trial) -> float:
            lr = trial.suggest_float("lr", 1e-5, 1e-2, log=True)
            epochs = trial.suggest_int("epochs", 1, max_epochs)
            batch = trial.suggest_categorical("batch_size", list(BATCH_SIZES))
            started = time.time()
            model = TransferModel(self.spec.build(pretrained=True), self.n_classes).to(self.device)
            optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
            self.model = model
            accuracy = 0.0
            for epoch in range(epochs):
                model.train()
                for x, y in self.batches(self.split["train"], batch, shuffle=True):
                    if time.time() > self.deadline:
                        trial.set_user_attr("stopped", "budget")
                        trial.study.stop()
                        raise optuna.TrialPruned()

                    loss = torch.nn.functional.cross_entropy(model(x), y)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                accuracy = self.accuracy(self.split["val"])
                trial.report(accuracy, epoch)
                if accuracy > self.best_value:
                    self.best_value = accuracy
                    self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if trial.should_prune():
                    raise optuna.TrialPruned()
            trial.set_user_attr("duration_s", round(time.time() - started, 2))
            return accuracy

        return objective
