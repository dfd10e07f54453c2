"""Reports and benchmarks: a real tiny benchmark (every method through the engine), the report of
one of its searches, and both pages parsed, checked image by image, and loaded in headless Chromium."""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import cli, read_json
from PIL import Image

from autotransfer.features.benchmark.render import head_start_section
from autotransfer.features.benchmark.stats import anytime, ranks, summarise, time_to_target
from autotransfer.features.benchmark.suite import Suite
from autotransfer.features.report import SECTIONS, parameter_importances

BACKBONES = ["tf_efficientnet_lite0", "tf_efficientnet_lite1"]
METHODS = ["autotransfer", "default-recipe", "probe", "random-search", "top-ranked"]
DATASET = "digits-10pc"
SUITE = f"""
name: tiny
datasets:
  - {{demo: digits, per_class: 10}}
seeds: [0]
budget: {{n_trials: 4}}
methods: [{", ".join(METHODS)}]
recipe_epochs: 1
search: {{image_size: 32, max_epochs: 2, backbones: [{", ".join(BACKBONES)}], strategies: [linear-probe]}}
"""


class Page(HTMLParser):
    """What a check needs from a page: section ids, images, every URL it references, console-free script."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids, self.images, self.urls, self.csp, self.sections = [], [], [], None, {}
        self._section = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self._section = attrs["id"]
            self.ids.append(attrs["id"])
            self.sections[self._section] = ""
        if tag == "img":
            self.images.append((self._section, attrs["src"]))
        for key in ("src", "href"):
            if key in attrs:
                self.urls.append(attrs[key])
        if tag == "meta" and attrs.get("http-equiv") == "Content-Security-Policy":
            self.csp = attrs["content"]

    def handle_endtag(self, tag):
        if tag == "section":
            self._section = None

    def handle_data(self, data):
        if self._section:
            self.sections[self._section] += data


def decode_png(src: str) -> Image.Image:
    assert src.startswith("data:image/png;base64,"), src[:40]
    image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    image.load()
    assert image.format == "PNG" and image.width > 300 and image.height > 150
    return image


def check_self_contained(page: Page) -> None:
    assert page.csp and "default-src 'none'" in page.csp and "img-src data:" in page.csp
    fetched = [u for u in page.urls if not (u.startswith("#") or u.startswith("data:"))]
    assert fetched == [], f"the page references {fetched}"
    for _, src in page.images:
        decode_png(src)


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    (root / "tiny.yaml").write_text(SUITE)
    out = root / "out"
    result = cli("benchmark", root / "tiny.yaml", "-o", out, "--device", "cpu")
    assert result.output.split()[-2:] == [str(out / "report.html"), str(out / "report.md")]
    return out


def run_dir(bench: Path, method: str) -> Path:
    return bench / "runs" / DATASET / method / "seed-0"


def trials_of(folder: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{folder / 'study.db'}").trials


# the benchmark -------------------------------------------------------------------------------
def test_benchmark_runs_every_method_under_the_same_budget(bench):
    runs = pd.read_csv(bench / "runs.csv")
    assert list(runs["method"]) == list(METHODS)
    assert runs["test_metric"].between(0, 1).all() and runs["test_metric"].notna().all()
    by = runs.set_index("method")
    for searching in ("autotransfer", "probe", "random-search"):
        assert by.loc[searching, "trials"] == 4  # the suite's budget
    # the fixed recipe: exactly one full fine-tune at AdamW 1e-4 for recipe_epochs, no search
    (recipe,) = trials_of(run_dir(bench, "default-recipe"))
    assert recipe.params["strategy"] == "full-finetune" and recipe.params["full-finetune.lr"] == 1e-4
    assert recipe.params["epochs"] == 1 and recipe.params["backbone"] == BACKBONES[0]
    # random search: no pruning and no hand-picked warm start (that would be lr 0.03 exactly)
    random = trials_of(run_dir(bench, "random-search"))
    assert all(t.state.name == "COMPLETE" for t in random)
    assert all(t.params["linear-probe.lr"] != 0.03 for t in random)
    # the shipped search starts from the warm-start probes, in LogME order
    shipped = trials_of(run_dir(bench, "autotransfer"))
    assert [t.params["linear-probe.lr"] for t in shipped[:2]] == [0.03, 0.03]
    # top-ranked trains the backbone LogME put first, with the recipe
    top = read_json(run_dir(bench, "top-ranked") / "run.json")
    assert sorted(name for name, _ in top["ranking"]) == sorted(BACKBONES)
    assert top["backbone"] == top["ranking"][0][0] and top["strategy"] == "full-finetune"


def test_benchmark_summary_tables_agree_with_the_runs(bench):
    runs = pd.read_csv(bench / "runs.csv")
    per_dataset = pd.read_csv(bench / "per_dataset.csv")
    assert sorted(per_dataset["rank"]) == sorted(
        ranks(dict(zip(runs["method"], runs["test_metric"]))).values()
    )
    best = runs.loc[runs["test_metric"].idxmax(), "method"]
    assert per_dataset.set_index("method").loc[best, "rank"] <= 1.5
    wtl = pd.read_csv(bench / "wins_ties_losses.csv").set_index("against")
    subject = runs.set_index("method").loc["autotransfer", "test_metric"]
    for other, row in wtl.iterrows():
        theirs = runs.set_index("method").loc[other, "test_metric"]
        expected = "wins" if subject > theirs else "losses" if subject < theirs else "ties"
        assert row[expected] == 1 and row[["wins", "ties", "losses"]].sum() == 1
    history = pd.read_csv(bench / "history.csv")
    assert set(history["method"]) == set(METHODS) and (history["elapsed_s"] > 0).all()
    assert (history.groupby("method")["elapsed_s"].max() <= runs.set_index("method")["seconds"]).all()


def test_benchmark_report_page(bench):
    page = Page((bench / "report.html").read_text())
    for section in ("setup", "mean-rank", "wins-ties-losses", f"dataset-{DATASET}", "files", "environment"):
        assert section in page.ids
    assert [s for s, _ in page.images] == [f"dataset-{DATASET}"]
    check_self_contained(page)
    for method in METHODS:
        assert method in page.sections["mean-rank"]
    machine = read_json(bench / "machine.json")
    assert machine["device"] == "cpu" and machine["cpu_count"] >= 1
    assert machine["torch"] in page.sections["environment"]
    markdown = (bench / "report.md").read_text()
    assert "## Mean rank across datasets" in markdown and f"## Dataset: {DATASET}" in markdown


def test_benchmark_run_again_skips_finished_runs(bench):
    before = (bench / "runs.csv").read_text()
    cli("benchmark", bench.parent / "tiny.yaml", "-o", bench, "--device", "cpu")
    assert (bench / "runs.csv").read_text() == before


ANYTIME = """
name: anytime
datasets: [{demo: digits, per_class: 6}]
seeds: [0]
budgets: [12s, 24s]
methods: [autotransfer, plain-loop]
search: {image_size: 32, max_epochs: 2, backbones: [tf_efficientnet_lite0]}
"""


def test_anytime_curves_give_every_method_each_budget_and_keep_it(tmp_path):
    """A suite of time budgets alone: every method at each budget, the run's whole time measured and
    held to the budget, the verdicts computed from the table, the curve drawn, ranks at the largest."""
    (tmp_path / "anytime.yaml").write_text(ANYTIME)
    out = tmp_path / "out"
    cli("benchmark", tmp_path / "anytime.yaml", "-o", out, "--device", "cpu")
    points = pd.read_csv(out / "anytime.csv")
    assert sorted(zip(points["budget_s"], points["method"])) == sorted(
        (b, m) for b in (12.0, 24.0) for m in ("autotransfer", "plain-loop")
    )
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 4 and set(runs["budget_s"]) == {12.0, 24.0}  # none at a suite budget

    overruns = pd.read_csv(out / "anytime_overruns.csv")
    assert len(overruns) == 4
    for _, run in overruns.iterrows():
        assert run["within"] == (run["seconds"] <= run["budget_s"] + max(0.05 * run["budget_s"], 15))
        if run["method"] != "plain-loop":  # the engine's runs keep their budget
            assert run["within"], run.to_dict()
    for budget in (12, 24):
        trials = trials_of(out / "runs" / DATASET_6 / f"budget-{budget}s" / "autotransfer" / "seed-0")
        assert any(t.state.name == "COMPLETE" for t in trials)
    means = points.set_index(["budget_s", "method"])["test_mean"]
    for _, v in pd.read_csv(out / "anytime_verdicts.csv").iterrows():
        assert v["best_other"] == "plain-loop"
        assert v["difference"] == pytest.approx(
            means[(v["budget_s"], "autotransfer")] - means[(v["budget_s"], "plain-loop")]
        )
    page = Page((out / "report.html").read_text())
    assert any(section.startswith("anytime") for section, _ in page.images)
    check_self_contained(page)
    assert "ranks and wins at the largest, 24 s" in (out / "report.md").read_text()


DATASET_6 = "digits-6pc"
CURVES = """

name: curves
datasets: [{demo: digits, per_class: 10}]
seeds: [0]
budget: {n_trials: 2}
methods: []
data_efficiency: {shots: [3, 1]}
search: {image_size: 32, max_epochs: 1, backbones: [tf_efficientnet_lite0]}
"""


def test_data_efficiency_curves(tmp_path):
    """Each method at each size, on the same validation and test sets; the picture and the verdicts."""
    (tmp_path / "curves.yaml").write_text(CURVES)
    out = tmp_path / "out"
    cli("benchmark", tmp_path / "curves.yaml", "-o", out, "--device", "cpu")
    points = pd.read_csv(out / "data_efficiency.csv")
    assert list(zip(points["size"], points["method"])) == [
        (size, method)
        for size in ("1-shot", "3-shot")
        for method in ("autotransfer", "probe", "from-scratch")
    ]
    assert dict(zip(points["size"], points["n_train"])) == {"1-shot": 10, "3-shot": 30}
    assert points["test_mean"].between(0, 1).all()
    splits = [
        read_json(path) for path in sorted((out / "runs" / DATASET).glob("train-*/*/seed-0/split.json"))
    ]
    assert len(splits) == 6
    assert all(s["val"] == splits[0]["val"] and s["test"] == splits[0]["test"] for s in splits)
    one, three = (
        set(
            read_json(out / "runs" / DATASET / f"train-{k}-shot" / "from-scratch" / "seed-0" / "split.json")[
                "train"
            ]
        )
        for k in (1, 3)
    )
    assert one < three
    scratch = trials_of(out / "runs" / DATASET / "train-3-shot" / "from-scratch" / "seed-0")
    assert {t.params["strategy"] for t in scratch} == {"scratch"}
    verdicts = pd.read_csv(out / "data_efficiency_verdicts.csv")
    means = points.set_index(["size", "method"])["test_mean"]
    for _, v in verdicts.iterrows():
        mine, theirs = means[(v["size"], "autotransfer")], means[(v["size"], v["against"])]
        assert v["verdict"] == ("better" if mine > theirs else "worse" if mine < theirs else "tie")
    page = Page((out / "report.html").read_text())
    assert [s for s, _ in page.images] == [f"efficiency-{DATASET}"]
    assert "mean-rank" not in page.ids  # no methods to compare at full size: the curves alone
    check_self_contained(page)
    markdown = (out / "report.md").read_text()
    assert f"## Data efficiency: {DATASET}" in markdown and "| 3-shot | 30 |" in markdown


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"methods": ["autotransfer", "grid-search"]}, "unknown method 'grid-search'; valid: autotransfer,"),
        ({"search": {"n_trials": 3}}, "search: n_trials cannot be set here"),
        ({"datasets": [{"demo": "cifar"}]}, "unknown demo 'cifar'"),
        ({"colour": "blue"}, "unknown keys colour"),
        ({"budget": {}}, "budget takes n_trials and/or time"),
        ({"data_efficiency": {"fractions": [0, 0.5]}}, "data_efficiency: fraction 0 is not in (0, 1]"),
        ({"data_efficiency": {"fractions": [0.5], "shots": [1]}}, "data_efficiency takes fractions"),
        (
            {"data_efficiency": {"shots": [5], "methods": ["from-scratch", "bagging"]}},
            "unknown method 'bagging'",
        ),
    ],
)
def test_bad_suites_are_one_line_errors(tmp_path, edit, message):
    import yaml

    suite = tmp_path / "bad.yaml"
    suite.write_text(yaml.safe_dump({"datasets": ["digits"], "budget": {"n_trials": 1}} | edit))
    result = cli("benchmark", suite, "-o", tmp_path / "out", expect=2)
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_ranks_share_ties_and_put_missing_results_last():
    assert ranks({"a": 0.9, "b": 0.8, "c": 0.8, "d": float("-inf")}) == {"a": 1, "b": 2.5, "c": 2.5, "d": 4}
    records = [
        {"dataset": d, "seed": 0, "method": m, "test_metric": v, "val_metric": v, "seconds": 1.0, "trials": 1}
        for d, scores in {"x": {"a": 0.9, "b": 0.5, "c": None}, "y": {"a": 0.6, "b": 0.61, "c": 0.2}}.items()
        for m, v in scores.items()
    ]
    summary = summarise(records, ["a", "b", "c"], "a", tie_tolerance=0.02)
    assert {r["method"]: r["mean_rank"] for r in summary["mean_rank"]} == {"a": 1.5, "b": 1.5, "c": 3.0}
    assert {r["against"]: (r["wins"], r["ties"], r["losses"]) for r in summary["wins_ties_losses"]} == {
        "b": (1, 1, 0),
        "c": (2, 0, 0),
    }


def test_the_portfolio_head_start_is_time_to_the_best_baselines_accuracy_against_the_ablation():
    """The search is timed to the best baseline's validation score against the same search without the
    portfolio; the ablation is never the baseline a verdict is against, even when it scores highest."""
    suite = Suite(
        name="s",
        datasets=[{"name": "x"}],
        seeds=[0, 1, 2],
        n_trials=None,
        budgets=[60.0],
        methods=["autotransfer", "probe", "random-search", "no-portfolio"],
    )

    def run(method, seed, val, test, history):
        return {
            "dataset": "x", "budget_s": 60.0, "seed": seed, "method": method, "val_metric": val,
            "test_metric": test, "seconds": 60.0, "trials": len(history), "history": history, "n_test": 100,
        }  # fmt: skip

    records = [
        *(run("probe", s, 0.80, 0.80, [[10.0, 0.8]]) for s in range(3)),
        *(run("random-search", s, v, 0.85, [[30.0, v]]) for s, v in enumerate([0.85, 0.9, 0.95])),  # mean 0.9
        run("autotransfer", 0, 0.93, 0.90, [[5.0, 0.7], [12.0, 0.91], [20.0, 0.93]]),
        run("autotransfer", 1, 0.92, 0.90, [[14.0, 0.92], [8.0, 0.5]]),  # in any order
        run("autotransfer", 2, 0.85, 0.90, [[9.0, 0.85]]),  # never reached: counts as never
        run("no-portfolio", 0, 0.95, 0.99, [[20.0, 0.95]]),
        run("no-portfolio", 1, 0.95, 0.99, [[25.0, 0.95]]),
        run("no-portfolio", 2, 0.80, 0.99, [[18.0, 0.8]]),
    ]
    (row,) = time_to_target(records, suite)
    assert (row["target_method"], row["target"]) == ("random-search", pytest.approx(0.9))
    assert row["autotransfer_s"] == 14.0 and row["autotransfer_reached"] == 2  # median of 12, 14, never
    assert row["no-portfolio_s"] == 25.0 and row["no-portfolio_reached"] == 2
    assert not row["holds"]  # 14 s is more than half of 25 s
    faster = [dict(r, history=[[5.0, 0.95]]) if r["method"] == "autotransfer" else r for r in records]
    assert time_to_target(faster, suite)[0]["holds"]
    shown = head_start_section(suite, [row]).markdown
    assert "14.0 s (2 of 3)" in shown and "25.0 s (2 of 3)" in shown and "FAILS" in shown
    # a benchmark where the ablation has no run there yet: no time, no verdict, and the section renders
    (alone,) = time_to_target([r for r in records if r["method"] != "no-portfolio"], suite)
    assert alone["no-portfolio_s"] is None and not alone["holds"]
    assert "| - |" in head_start_section(suite, [alone]).markdown
    # the ablation's test mean (0.99) is the highest, but the verdict is against random search's
    (verdict,) = anytime(records, suite)["verdicts"]
    assert verdict["best_other"] == "random-search" and verdict["holds"]


# the report of one search ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def searched(bench, tmp_path_factory) -> Path:
    """The benchmark's shipped search, copied: a real search output folder."""
    folder = Path(
        shutil.copytree(run_dir(bench, "autotransfer"), tmp_path_factory.mktemp("report") / "search")
    )
    result = cli("report", folder)
    assert result.output.split() == [str(folder / "report.html"), str(folder / "report.md")]
    return folder


def test_report_holds_every_section_with_the_search_numbers(searched):
    page = Page((searched / "report.html").read_text())
    assert page.ids == list(SECTIONS)
    check_self_contained(page)
    best = read_json(searched / "best.json")
    assert f"{best['test_metric']:.4f}" in page.sections["best"] and best["backbone"] in page.sections["best"]
    assert best["verdict"][1:] in page.sections["verdict"]
    leaderboard = pd.read_csv(searched / "leaderboard.csv")
    board = page.sections["leaderboard"]
    for _, row in leaderboard.iterrows():
        assert row["state"] in board and (pd.isna(row["value"]) or f"{row['value']:.4f}" in board)
    for _, row in leaderboard[leaderboard["state"].isin(["PRUNED", "FAIL"])].iterrows():
        assert row["fail_reason"] in page.sections["pruned-failed"]
    assert (
        "LogME" in page.sections["environment"]
        and best["environment"]["torch"] in page.sections["environment"]
    )
    # a plot wherever there is something to plot; importances exactly when the guard allows them
    plotted = {section for section, _ in page.images}
    assert {"history", "by-backbone", "by-strategy"} <= plotted
    study = optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{searched / 'study.db'}")
    complete = [t for t in study.trials if t.state.name == "COMPLETE" and not t.user_attrs.get("reference")]
    assert ("importance" in plotted) == (len(complete) >= 2)
    markdown = (searched / "report.md").read_text()
    for title in (
        "Best configuration",
        "Did transfer help?",
        "Leaderboard",
        "Pruned and failed trials",
        "Environment",
    ):
        assert f"## {title}" in markdown
    assert best["verdict"][1:] in markdown


def test_report_lists_failed_trials_with_their_reasons(searched, tmp_path):
    folder = Path(shutil.copytree(searched, tmp_path / "search"))
    study = optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{folder / 'study.db'}")
    crashed = study.ask()
    crashed.set_user_attr("fail_reason", "RuntimeError: the plugin crashed on purpose")
    study.tell(crashed, state=optuna.trial.TrialState.FAIL)
    killed = study.ask()  # no reason recorded: what a worker killed mid-trial leaves
    study.tell(killed, state=optuna.trial.TrialState.FAIL)
    cli("report", folder)
    page = Page((folder / "report.html").read_text())
    stopped = page.sections["pruned-failed"]
    assert "RuntimeError: the plugin crashed on purpose" in stopped and "interrupted" in stopped
    assert "2 failed" in stopped
    assert "the plugin crashed on purpose" in (folder / "report.md").read_text()


def test_importances_need_two_complete_trials_that_vary():
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(
        lambda t: -(t.suggest_float("x", -2, 2) ** 2) + 0 * t.suggest_int("epochs", 1, 3), n_trials=1
    )
    values, note = parameter_importances(study)
    assert values is None and "at least 2 completed trials" in note and "has 1" in note
    study.optimize(
        lambda t: -(t.suggest_float("x", -2, 2) ** 2) + 0 * t.suggest_int("epochs", 1, 3), n_trials=12
    )
    values, note = parameter_importances(study)
    assert set(values) == {"x", "epochs"} and values["x"] > values["epochs"]


def test_report_of_a_folder_without_a_study_is_a_one_line_error(tmp_path):
    result = cli("report", tmp_path, expect=2)
    assert "no study.db" in result.output and "Traceback" not in result.output


# in a real browser -----------------------------------------------------------------------------
def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("headless Chromium is needed to check the reports: apt-get install chromium")


def open_in_chromium(page: Path, tmp_path: Path, *extra: str) -> tuple[str, list[str]]:
    """Load ``page`` headless; returns the DOM after its scripts ran and every console line."""
    run = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            *extra,
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return run.stdout, console


def test_chromium_catches_a_broken_image(tmp_path):
    """The browser check can fail: a page whose image does not decode logs a console error."""
    from autotransfer.features.page import Section, render

    broken = tmp_path / "broken.html"
    broken.write_text(
        render("broken", "test", [Section("s", "S", '<img src="data:image/png;base64,AAAA" alt="x">')])
    )
    dom, console = open_in_chromium(broken, tmp_path, "--dump-dom")
    assert any("failed to load" in line for line in console), console
    assert 'data-images-loaded="0"' in dom


@pytest.mark.parametrize("which", ["report", "benchmark"])
def test_pages_load_in_chromium_without_console_errors(which, searched, bench, tmp_path):
    html = (searched if which == "report" else bench) / "report.html"
    dom, console = open_in_chromium(html, tmp_path, "--dump-dom")
    assert console == []
    n_images = len(Page(html.read_text()).images)
    assert n_images and f'data-images-loaded="{n_images}"' in dom
    shot = tmp_path / f"{which}.png"
    open_in_chromium(html, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
    image = Image.open(shot)
    assert image.size == (1280, 2000)
    assert len(np.unique(np.asarray(image.convert("L")))) > 8  # not a blank page


def test_report_of_an_unfinished_search_with_negative_transfer(searched, tmp_path):
    """Interrupted before the end (no best.json), with a random-init reference that beat every transfer."""
    folder = Path(shutil.copytree(searched, tmp_path / "search"))
    (folder / "best.json").unlink()
    study = optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{folder / 'study.db'}")
    study.add_trial(
        optuna.trial.create_trial(
            params={"scratch.lr": 1e-3},
            distributions={"scratch.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2)},
            value=0.99,
            user_attrs={"reference": "scratch", "backbone": BACKBONES[0], "strategy": "scratch"},
        )
    )
    cli("report", folder)
    page = Page((folder / "report.html").read_text())
    assert "has not finished" in page.sections["best"] and "0.9900" in page.sections["best"]
    assert "Transfer did NOT help: training from random weights reached 0.9900" in page.sections["verdict"]
    assert '<p class="verdict bad">' in (folder / "report.html").read_text()
    assert page.ids == list(SECTIONS)


def test_the_default_recipe_is_one_fixed_trial_even_when_the_budget_cannot_hold_it(digits, tmp_path):
    """Ten epochs of a full fine-tune at the backbone's 224 px cannot fit 10 s on a CPU: the recipe
    still runs (it is not skipped for its price, and nothing else is sampled in its place) until the
    budget stops it, and the run keeps its budget."""
    import time

    from autotransfer.config import SearchConfig
    from autotransfer.features.benchmark.methods import METHODS

    config = SearchConfig(
        data=str(digits),
        output=str(tmp_path / "out"),
        budget=10,
        device="cpu",
        seed=0,
        backbones=["tf_efficientnet_lite0"],
    )
    started = time.time()
    outcome = METHODS["default-recipe"].prepare(config, Suite(name="recipe", datasets=[])).run()
    assert time.time() - started < 10 + 15
    (trial,) = trials_of(tmp_path / "out")
    assert trial.params["strategy"] == "full-finetune" and trial.params["full-finetune.lr"] == 1e-4
    assert trial.params["image_size"] == 224 and "skipped" not in trial.user_attrs
    assert trial.user_attrs.get("stopped") == "budget" or trial.state.name == "COMPLETE"
    assert trial.user_attrs.get("epochs_run", 0) < 10  # trimmed or stopped, never the ten
    assert outcome.best is None or outcome.best["trial"] == 0
