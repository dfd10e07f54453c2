"""Shared fixtures: real demo datasets written as files, and the CLI run as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from autotransfer.cli import main
from autotransfer.plugins import reset_host

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# one compute thread per process: the suite runs several processes at once (workers, kill -9 tests) on a
# small CI machine, where torch's one-thread-per-core default makes them spin against each other
os.environ.setdefault("OMP_NUM_THREADS", "1")
#: a user's plugin registering one strategy: a linear probe (the head trains, nothing else) whose
#: ``extra_loss`` (its body below, indented, returning the loss to add) does what a test needs
PROBE_PLUGIN = """
import time

import torch
import torch.nn.functional as F

from autotransfer import hookimpl
from autotransfer.specs import StrategySpec

{constants}


def prepare(model, params, context):
    from autotransfer.strategy import fine_tune_plan

    plan = fine_tune_plan(model, context.n_groups, {{}})

    def extra_loss(model, source, extras, progress):
{extra_loss}

    plan.extra_loss = extra_loss
    return plan


@hookimpl
def register_strategies(register):
    register(StrategySpec(name={name!r}, description={description!r}, prepare=prepare, lr_range=(0.01, 0.1)))
"""


def write_probe_plugin(path: Path, name: str, description: str, extra_loss: str, constants: str = "") -> Path:
    """PROBE_PLUGIN as a file."""
    body = "\n".join(f"        {line}" for line in extra_loss.strip().splitlines())
    text = PROBE_PLUGIN.format(constants=constants, extra_loss=body, name=name, description=description)
    path.write_text(text)
    return path


def write_slow_plugin(path: Path, seconds_per_example: float = 0.02, after: int = 0) -> Path:
    """A user's strategy that trains much slower than any measurement predicts, ``slow-probe``: a
    linear probe that sleeps this long per training example, whatever the batch, once a process has
    trained ``after`` batches with it (a slow data pipeline, or a machine that gets busy mid-trial)."""
    return write_probe_plugin(
        path,
        "slow-probe",
        "a linear probe that sleeps every batch",
        """
global batches
batches += 1
if batches > AFTER:  # whatever the batch size, the same per epoch
    time.sleep(SECONDS_PER_EXAMPLE * len(source))
return source.sum() * 0.0
""",
        constants=f"SECONDS_PER_EXAMPLE = {seconds_per_example}\nAFTER = {after}\nbatches = 0",
    )


def write_collapsing_plugin(path: Path) -> Path:
    """A user's strategy whose extra loss overwhelms the task's, ``collapsing-probe``: a linear probe
    pulled to predict the first class for every input, as a diverged fine-tune ends up predicting one."""
    return write_probe_plugin(
        path,
        "collapsing-probe",
        "a linear probe that predicts one class",
        """
logits = model.classify_features(source).float()
first = torch.zeros(len(logits), dtype=torch.long, device=logits.device)
return 100 * F.cross_entropy(logits, first)
""",
    )


def queued_search(digits: Path, tmp_path: Path, queued: list, **options):
    """A search on digits with EfficientNet-Lite0 on the CPU, seed 0, no reference or ensemble, through
    the Python API, with ``queued`` trials first (each its params, or (params, user_attrs)): (config,
    result)."""
    from autotransfer.config import SearchConfig
    from autotransfer.engine.run import Search, quiet_optuna

    options = {
        "device": "cpu",
        "seed": 0,
        "quiet": True,
        "backbones": ["tf_efficientnet_lite0"],
        "reference": False,
        "ensemble": False,
        **options,
    }
    config = SearchConfig(data=str(digits), output=str(tmp_path / "out"), **options)
    with quiet_optuna():
        search = Search.open(config)
        for item in queued:
            params, attrs = item if isinstance(item, tuple) else (item, None)
            search.study.study.enqueue_trial(params, user_attrs=attrs)
        return config, search.run()


# small, fast, still real: EfficientNet-Lite0 at 64 px on 30 digits per class
FAST = ["--image-size", "64", "--backbones", "tf_efficientnet_lite0", "--quiet"]


@pytest.fixture(autouse=True)
def _fresh_plugins():
    """Plugins a test loads do not leak into the next test."""
    yield
    reset_host()


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> Path:
    from autotransfer.features.demo import export_digits

    return export_digits(str(tmp_path_factory.mktemp("data") / "digits"), per_class=30)


@pytest.fixture
def digits_copy(digits, tmp_path) -> Path:
    """A private copy a test may damage."""
    import shutil

    return Path(shutil.copytree(digits, tmp_path / "digits"))


def cli(*args: str, expect: int | None = 0):
    """Run the CLI in-process, as a user types it; returns click's result."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if expect is not None:
        assert result.exit_code == expect, result.output
    return result


def cli_subprocess(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "autotransfer.cli", *map(str, args)], capture_output=True, text=True, **kwargs
    )


def interruptible() -> None:
    """A ``preexec_fn``: the child takes Ctrl-C (SIGINT) even when the tests run in the background,
    where the shell has the tests ignore it and a child inherits that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="session")
def digits_search(digits, tmp_path_factory) -> Path:
    """One real search of 6 trials, shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("search") / "out"
    result = CliRunner().invoke(
        main,
        ["search", str(digits), "-o", str(out), "--n-trials", "6", "--max-epochs", "3", *FAST],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    reset_host()
    return out


@pytest.fixture
def postgres_url() -> str:
    """A PostgreSQL server for the multi-worker tests: CI starts one (.ci/run) and must not skip them."""
    url = os.environ.get("AUTOTRANSFER_TEST_POSTGRES")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "CI=true but AUTOTRANSFER_TEST_POSTGRES is unset: .ci/run starts PostgreSQL and sets it"
            )
        pytest.skip(
            "set AUTOTRANSFER_TEST_POSTGRES=postgresql://USER:PASSWORD@HOST/DB to run the PostgreSQL tests"
        )
    return url


@pytest.fixture
def shared_study(request, tmp_path):
    """(storage URL, study name) on ``sqlite`` or ``postgres`` (indirect parametrisation); a
    PostgreSQL study is deleted afterwards."""
    import uuid

    import optuna

    from autotransfer.config import with_driver

    name = f"test-{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared-study.db'}", name
        return
    url = request.getfixturevalue("postgres_url")
    yield url, name
    try:
        optuna.delete_study(study_name=name, storage=with_driver(url))
    except KeyError:
        pass


def problem_for(data, tmp_path, **options):
    """The search's problem (data, split, candidates, caches) without a study, as ranking builds it."""
    from autotransfer.config import SearchConfig
    from autotransfer.engine.problem import open_problem
    from autotransfer.plugins import default_host

    config = SearchConfig(data=str(data), output=str(tmp_path / "o"), quiet=True, **options)
    return open_problem(config, default_host())


def trainer_for(problem, params: dict, role: str = ""):
    """A ready trainer for fixed parameters, as the search builds one for a trial."""
    import optuna

    from autotransfer.engine.trial import build_trial

    trainer, _ = build_trial(problem, optuna.trial.FixedTrial(params), role)
    return trainer
