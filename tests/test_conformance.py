"""autotransfer.testing's conformance cases, run on the bundled plugins as a plugin author runs them.

Parametrised over the registry: a backbone, strategy or task a bundled plugin registers is tested
by being registered. The example third-party plugin is tested in tests/test_plugins.py.
"""

from __future__ import annotations

import pytest

from autotransfer.specs import IMAGE, TEXT
from autotransfer.testing import (
    TINY_BACKBONE,
    BackboneConformance,
    StrategyConformance,
    TaskConformance,
    TinyBackbonePlugin,
    registered,
)

BUNDLED = "autotransfer"  # the distribution the bundled plugins come with


class TestTinyBackbone(BackboneConformance):
    """The harness's own backbone passes the backbone case."""

    name = TINY_BACKBONE
    plugins = (TinyBackbonePlugin(),)


class TestBundledImageBackbones(BackboneConformance):
    @pytest.fixture(params=registered("backbones", modality=IMAGE, source=BUNDLED))
    def spec_name(self, request):
        return request.param


class TestBundledTextBackbones(BackboneConformance):
    """Empty until a bundled plugin registers text backbones."""

    @pytest.fixture(params=registered("backbones", modality=TEXT, source=BUNDLED))
    def spec_name(self, request):
        return request.param


class TestBundledStrategies(StrategyConformance):
    @pytest.fixture(params=registered("strategies", source=BUNDLED))
    def spec_name(self, request):
        return request.param


class TestBundledTasks(TaskConformance):
    @pytest.fixture(params=registered("tasks", source=BUNDLED))
    def spec_name(self, request):
        return request.param
