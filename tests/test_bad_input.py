"""Bad input, as users have it: each case is a clear one-line error or is handled, and nothing good
is lost on the way."""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import click
import numpy as np
import pytest
from conftest import cli, read_json
from PIL import Image

TINY = [
    "--image-size",
    "32",
    "--backbones",
    "tf_efficientnet_lite0",
    "--strategies",
    "linear-probe",
    "--n-trials",
    "1",
    "--max-epochs",
    "1",
    "--no-reference",
    "--no-rank",
    "--quiet",
]


def _one_line_error(result, *words):
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    for word in words:
        assert word.lower() in errors[0].lower(), errors[0]
    assert "Traceback" not in result.output
    return errors[0]


def _png_header(path: Path, width: int, height: int) -> None:
    """A PNG that claims width x height grey pixels: what a decompression bomb looks like."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """Digits with every kind of damage and oddity a real folder has; returns (data, good items, bad
    items)."""
    from autotransfer.features.demo import export_digits

    root = export_digits(str(tmp_path_factory.mktemp("messy") / "data"), per_class=10)
    os.rename(root / "7", root / "sieben-ü")  # a non-ASCII class name
    files = {c.name: sorted(c.iterdir()) for c in root.iterdir()}
    # every colour mode a folder mixes: grey is the default; RGBA, palette (with transparency),
    # 16-bit, CMYK JPEG
    grey = lambda f: Image.open(f).convert("L")  # noqa: E731
    grey(files["0"][0]).convert("RGBA").save(files["0"][0])
    grey(files["0"][1]).convert("P").save(files["0"][1], transparency=0)
    grey(files["1"][0]).convert("LA").save(files["1"][0])
    Image.fromarray(np.asarray(grey(files["1"][1]), np.uint16) * 257).save(files["1"][1])
    grey(files["2"][0]).convert("CMYK").save(files["2"][0].with_suffix(".jpg"))
    files["2"][0].unlink()
    # non-ASCII and non-UTF-8 file names
    shutil.copy(files["3"][0], root / "3" / "ziffer-drei-日本.png")
    with open(os.path.join(os.fsencode(root / "3"), b"bytes-\xff\xfe.png"), "wb") as f:
        f.write(files["3"][1].read_bytes())
    # damage: corrupt, truncated, empty, a decompression bomb, link loops, a dangling link
    bad = {
        "4/corrupt.png": "cannot decode",
        "4/truncated.png": "cannot decode",
        "5/empty.png": "empty file",
        "5/huge.png": "too large",
        "6/loop.png": "leads back to itself",
        "6/dangling.png": "cannot read",
    }
    (root / "4" / "corrupt.png").write_bytes(os.urandom(600))
    data = files["4"][0].read_bytes()
    (root / "4" / "truncated.png").write_bytes(data[: len(data) // 2])
    (root / "5" / "empty.png").write_bytes(b"")
    _png_header(root / "5" / "huge.png", 30000, 30000)
    os.symlink("loop.png", root / "6" / "loop.png")
    os.symlink("missing.png", root / "6" / "dangling.png")
    os.symlink("..", root / "8" / "up")  # a folder link back to the data: would repeat every class
    good = sorted(
        os.fsencode(os.path.relpath(os.path.join(d, f), root)).decode("utf-8", "backslashreplace")
        for d, _, names in os.walk(root)
        for f in names
        if not os.path.islink(os.path.join(d, f))
    )
    good = [item for item in good if item not in bad]
    return root, good, bad


@pytest.fixture(scope="module")
def messy_search(messy, tmp_path_factory):
    from click.testing import CliRunner

    from autotransfer.cli import main
    from autotransfer.plugins import reset_host

    data, _, _ = messy
    out = tmp_path_factory.mktemp("messy-out") / "out"
    args = ["search", str(data), "-o", str(out), *TINY]
    args[args.index("--n-trials") + 1] = "3"  # three trials, for the report and resume cases below
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    reset_host()
    return result, out


def test_damaged_images_are_skipped_by_name_and_every_good_one_is_used(messy, messy_search):
    data, good, bad = messy
    result, out = messy_search
    assert result.exit_code == 0, result.output
    for name, reason in bad.items():
        lines = [l for l in result.stderr.splitlines() if name in l]
        assert len(lines) == 1 and reason in lines[0], (name, result.stderr)  # named once, with its reason
    (up,) = [l for l in result.stderr.splitlines() if "8/up" in l]
    assert "loops back" in up
    split = read_json(out / "split.json")
    used = sorted(item for items in split.values() for item in items)
    assert used == good  # every readable image, whatever its mode or name; no damaged one; nothing twice
    assert any("日本" in item for item in used) and any("\\xff" in item for item in used)
    assert read_json(out / "best.json")["trials"] == {"complete": 3}


def test_odd_modes_and_names_predict(messy, messy_search):
    data, _, _ = messy
    _, out = messy_search
    inputs = [
        data / "0" / sorted(os.listdir(data / "0"))[0],
        data / "3" / "ziffer-drei-日本.png",
        data / "sieben-ü",
    ]
    result = cli("predict", out / "model", *inputs, "--json")
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert len(rows) == 2 + len(os.listdir(data / "sieben-ü"))
    assert {r["label"] for r in rows} <= set(read_json(out / "model" / "config.json")["classes"])


def test_transparency_and_16_bit_grey_decode_to_what_a_viewer_shows(tmp_path):
    from autotransfer_image import encode_files

    clear = tmp_path / "clear.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(clear)  # fully transparent, black underneath
    half = tmp_path / "half.png"
    Image.fromarray(np.full((8, 8), 32896, np.uint16)).save(half)  # 16-bit mid grey
    palette = tmp_path / "palette.gif"
    Image.new("P", (8, 8), 3).save(palette, transparency=3)
    pixels = encode_files([clear, half, palette], {"image_size": 8, "interpolation": "bilinear"})
    assert pixels.shape == (3, 3, 8, 8)
    assert pixels[0].min() == 255 and pixels[2].min() == 255  # over white, not the hidden black
    assert abs(int(pixels[1].float().mean()) - 128) <= 1  # scaled, not clipped to white


def test_a_class_with_one_image_is_a_clear_error(digits_copy):
    for f in sorted((digits_copy / "4").iterdir())[1:]:
        f.unlink()
    _one_line_error(
        cli("search", digits_copy, "-o", digits_copy.parent / "out", *TINY, expect=None),
        "'4'",
        "single example",
    )


def test_a_class_whose_images_are_all_damaged_is_a_clear_error(digits_copy):
    for f in (digits_copy / "4").iterdir():
        f.write_bytes(f.read_bytes()[:40])
    _one_line_error(
        cli("search", digits_copy, "-o", digits_copy.parent / "out", *TINY, expect=None), "'4'", "no examples"
    )


def test_a_folder_of_nothing_but_damage_is_a_clear_error(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "x.png").write_bytes(b"not an image")
    _one_line_error(
        cli("search", tmp_path / "data", "-o", tmp_path / "out", *TINY, expect=None), "could be decoded"
    )


def one_model(out: Path) -> Path:
    """The exported best trial's folder: ``model/``, or an ensemble's first member in it."""
    config = read_json(out / "model" / "config.json")
    return out / "model" / (config["ensemble"][0]["path"] if "ensemble" in config else "")


def test_predict_refuses_a_pickle_unless_trusted(messy, messy_search, tmp_path):
    import torch
    from safetensors.torch import load_file

    data, _, _ = messy
    _, out = messy_search
    assert {p.suffix for p in (out / "checkpoints").iterdir()} <= {".safetensors", ".json"}
    folder = one_model(out)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(folder / "config.json", pickled)
    torch.save(load_file(folder / "model.safetensors"), pickled / "model.pt")
    image = data / "3" / "ziffer-drei-日本.png"
    _one_line_error(cli("predict", pickled, image, expect=None), "model.pt", "pickle", "--trust-pickle")
    trusted = cli("predict", pickled, image, "--trust-pickle").output
    assert trusted == cli("predict", folder, image).output


# text data: these run on the text task (plugins/autotransfer_text)
TEXT = [
    "--n-trials",
    "1",
    "--max-epochs",
    "1",
    "--no-reference",
    "--no-rank",
    "--strategies",
    "linear-probe",
    "--quiet",
]


def _texts(n_per_class: int = 6):
    topics = {
        "sport": "the team won the match and the league final",
        "money": "the bank raised rates and shares fell",
    }
    return [
        (f"{text} report number {i}", label) for label, text in topics.items() for i in range(n_per_class)
    ]


def test_a_csv_that_is_not_utf8_is_a_clear_error_or_read(tmp_path):
    path = tmp_path / "latin1.csv"
    rows = "text,label\n" + "".join(f"café crème {t},{l}\n" for t, l in _texts())
    path.write_bytes(rows.encode("latin-1"))
    result = cli("search", path, "-o", tmp_path / "out", *TEXT, expect=None)
    if result.exit_code == 2:
        error = _one_line_error(result, "latin1.csv")
        assert "utf-8" in error.replace(str(tmp_path), "").lower(), error  # says what is wrong with the file
    else:
        assert result.exit_code == 0, result.output
        assert read_json(tmp_path / "out" / "best.json")["n_train"] + read_json(
            tmp_path / "out" / "best.json"
        )["n_val"] + read_json(tmp_path / "out" / "best.json")["n_test"] == len(_texts())


def test_numeric_and_string_labels_mixed_keep_every_row(tmp_path):
    path = tmp_path / "mixed.csv"
    rows = [(t, "1" if l == "sport" else "one") for t, l in _texts()]
    rows += [(f"{t} again", "2") for t, _ in _texts(3)] + [(f"{t} twice", "2.0") for t, _ in _texts(3)]
    path.write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in rows), encoding="utf-8")
    result = cli("search", path, "-o", tmp_path / "out", *TEXT, expect=None)
    if result.exit_code == 2:
        error = _one_line_error(result, "mixed.csv")
        assert "label" in error.replace(str(tmp_path), "").lower(), error  # names the label column's problem
        return
    assert result.exit_code == 0, result.output
    classes = read_json(tmp_path / "out" / "model" / "config.json")["classes"]
    assert sorted(classes) == ["1", "2", "2.0", "one"]  # labels are the text written, never coerced
    best = read_json(tmp_path / "out" / "best.json")
    assert best["n_train"] + best["n_val"] + best["n_test"] == len(rows)


# every option of `search`, out of range ----------------------------------------------------------
#: values no search can run with, for options whose type does not say what is out of range (texts,
#: paths), and for numbers where the issue quoted one; ("texts", value) runs on a CSV of texts.
#: EXISTING_FILE and MISSING stand for an existing file and a path that does not exist.
EXISTING_FILE, MISSING = "<an existing file>", "<a missing path>"
OUT_OF_RANGE = {
    "--task": ["no-such-task"],
    "--output": [EXISTING_FILE],
    "--budget": ["-5m", "0", "soon"],
    "--n-trials": ["0", "-1"],
    "--timeout": ["-5"],  # replaced by --budget: any value is refused, naming --budget
    "--backbones": ["no-such-backbone"],
    "--strategies": ["no-such-strategy"],
    "--storage": ["nosuchdb://host/db"],
    "--study-name": [" "],
    "--device": ["quantum"],
    "--devices": ["gpu0"],
    "--heartbeat": ["1"],
    "--seed": ["-1"],
    "--target-unlabeled": [MISSING],
    "--target-eval": [MISSING],
    "--aux-task": [MISSING],
    "--portfolio": [MISSING],
    "--image-size": ["0"],
    "--max-epochs": ["0"],
    "--train-fraction": ["0", "1.5", "nan"],
    "--shots": ["0"],
    "--text-column": [("texts", "no-such-column")],
    "--label-column": [("texts", "no-such-column")],
    "--encoding": [("texts", "no-such-codec")],
    "--max-length": ["0"],
}


def _search_options():
    from autotransfer.cli import search

    return [p for p in search.params if isinstance(p, click.Option)]


def _out_of_range_cases():
    """(flag, value, data kind): the values above, and for every number option a negative number and
    a word (so a new number option is covered by its type; a new text option fails the test below)."""
    cases = []
    for option in _search_options():
        if option.is_flag:
            continue
        flag = option.opts[0]
        for value in OUT_OF_RANGE.get(flag, []):
            cases.append((flag, *reversed(value)) if isinstance(value, tuple) else (flag, value, "images"))
        if isinstance(option.type, (click.types.IntParamType, click.types.FloatParamType)):
            cases += [(flag, "-1", "images"), (flag, "abc", "images")]
    return list(dict.fromkeys(cases))


def _without(args: list[str], *flags: str) -> list[str]:
    """``args`` less ``flags`` and their values."""
    kept, i = [], 0
    while i < len(args):
        takes_value = i + 1 < len(args) and not str(args[i + 1]).startswith("--")
        if args[i] not in flags:
            kept += args[i : i + 1 + takes_value]
        i += 1 + takes_value
    return kept


CASES = _out_of_range_cases()


def test_every_search_option_has_out_of_range_values():
    """A new option of `search` needs its out-of-range values here (flags take none)."""
    covered = {flag for flag, _, _ in CASES}
    missing = [o.opts[0] for o in _search_options() if not o.is_flag and o.opts[0] not in covered]
    assert missing == [], f"add out-of-range values for {missing} to OUT_OF_RANGE"
    assert {"--no-cache", "--quiet"} <= {o.opts[0] for o in _search_options() if o.is_flag}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """Real digits as a class folder each, and a CSV of texts: what each option is tried on."""
    from autotransfer.features.demo import export_digits

    root = tmp_path_factory.mktemp("small")
    images = export_digits(str(root / "digits"), per_class=4)
    texts = root / "texts.csv"
    texts.write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in _texts(3)), encoding="utf-8")
    (root / "a-file.txt").write_text("not a folder")
    return {"images": images, "texts": texts, EXISTING_FILE: root / "a-file.txt", MISSING: root / "missing"}


@pytest.mark.parametrize("flag,value,kind", CASES, ids=[f"{f}={v}" for f, v, _ in CASES])
def test_every_search_option_refuses_an_out_of_range_value(small_data, tmp_path, flag, value, kind):
    value = str(small_data.get(value, value))
    # cheap settings, should a bad value slip through, without the option under test
    base = _without(TINY if kind == "images" else TEXT, flag)
    result = cli("search", small_data[kind], "-o", tmp_path / "out", *base, flag, value, expect=None)
    error = _one_line_error(result)
    shown = error.replace(str(tmp_path), "").lower()
    assert flag in error or value.lower() in shown, error
    assert "usage:" not in result.output.lower()


# the tracebacks -----------------------------------------------------------------------
def test_no_cache_ranks_several_backbones_on_what_the_cache_would_give(small_data, tmp_path):
    """`search DATA --strategies linear-probe --no-cache` with the default backbones (more than one):
    the LogME ranking once got unpooled activations and ended in a ValueError."""
    import optuna

    out = tmp_path / "out"
    args = ["--image-size", "32", "--n-trials", "1", "--max-epochs", "1", "--no-reference", "--quiet"]
    cli("search", small_data["images"], "-o", out, "--strategies", "linear-probe", "--no-cache", *args)
    study = optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{out / 'study.db'}")
    ranked = dict(study.user_attrs["ranking"])
    assert len(ranked) >= 2 and [t.state.name for t in study.trials].count("COMPLETE") == 1
    ranking = json.loads(cli("rank", small_data["images"], "--image-size", "32", "--json").stdout)
    assert {r["backbone"]: pytest.approx(r["logme"], abs=1e-3) for r in ranking} == ranked


def test_ranking_with_the_strategies_plugin_blocked_is_one_line(small_data, monkeypatch):
    """`AUTOTRANSFER_PLUGINS_BLOCK=strategies autotransfer rank DATA`."""
    monkeypatch.setenv("AUTOTRANSFER_PLUGINS_BLOCK", "strategies")
    _one_line_error(cli("rank", small_data["images"], expect=None), "probe", "autotransfer plugins")


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder this user cannot write: one made read-only, or /sys for root, whom modes do not stop."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    return Path("/sys")


@pytest.mark.parametrize("inside", [True, False], ids=["inside", "itself"])
def test_an_output_folder_that_cannot_be_written_blames_output(small_data, tmp_path, inside):
    folder = _read_only_folder(tmp_path)
    out = folder / "autotransfer-out" if inside else folder
    error = _one_line_error(
        cli("search", small_data["images"], "-o", out, *TINY, expect=None), f"--output {out}", "cannot write"
    )
    assert "--storage" not in error


def test_predict_with_truncated_weights_is_one_line(messy, messy_search, tmp_path):
    """`autotransfer predict MODEL_DIR IMG` where MODEL_DIR/model.safetensors is truncated."""
    data, _, _ = messy
    _, out = messy_search
    model = Path(shutil.copytree(one_model(out), tmp_path / "model"))
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    image = data / "3" / "ziffer-drei-日本.png"
    _one_line_error(cli("predict", model, image, expect=None), str(weights), "export")


def _trials(out: Path):
    import optuna

    study = optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{out / 'study.db'}")
    return {t.number: (t.state.name, t.value, t.params) for t in study.trials}


def test_resuming_with_other_settings_is_refused_by_name_and_keeps_every_trial(messy, messy_search, tmp_path):
    """The README's tour re-ran the demo search without --max-epochs and --image-size: the new trials
    mixed other settings into the study. Each changed setting is named; nothing is lost."""
    data, _, _ = messy
    _, finished = messy_search
    out = Path(shutil.copytree(finished, tmp_path / "out"))
    before = _trials(out)
    without = _without(TINY, "--image-size", "--max-epochs")
    error = _one_line_error(
        cli("search", data, "-o", out, *without, expect=None), "--max-epochs 1", "--image-size 32"
    )
    assert "not 10" in error and "(not given)" in error
    other = [*_without(TINY, "--backbones"), "--backbones", "tf_efficientnet_lite1"]
    _one_line_error(cli("search", data, "-o", out, *other, expect=None), "--backbones tf_efficientnet_lite0")
    assert _trials(out) == before
    assert read_json(out / "best.json") == read_json(finished / "best.json")


NAP_PLUGIN = """
import time
from pathlib import Path

from autotransfer import hookimpl
from autotransfer.specs import StrategySpec
from autotransfer.strategy import fine_tune_plan

MARKER = Path(__file__).with_suffix(".napped")


def prepare(model, params, context):
    if MARKER.exists():  # the second trial never ends: its worker is killed
        time.sleep(600)
    MARKER.write_text("")
    return fine_tune_plan(model, context.n_groups, {})  # a linear probe


@hookimpl
def register_strategies(register):
    register(StrategySpec(name="nap", description="a probe whose second trial hangs", prepare=prepare))
"""


def test_a_rerun_while_a_killed_trial_waits_for_its_heartbeat_says_so(small_data, tmp_path):
    """kill -9 mid-trial, then the same command at once, inside the heartbeat window: it said nothing."""
    import signal
    import subprocess
    import sys
    import time

    plugin = tmp_path / "nap_strategy.py"
    plugin.write_text(NAP_PLUGIN)
    out = tmp_path / "out"
    args = ["--plugin", plugin, "search", small_data["images"], "-o", out, "--strategies", "nap"]
    args += ["--n-trials", "2", "--heartbeat", "60", "--image-size", "32", "--max-epochs", "1"]
    args += ["--backbones", "tf_efficientnet_lite0", "--no-reference", "--no-rank"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "autotransfer", *map(str, args), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    states, deadline = {}, time.time() + 180
    try:
        while time.time() < deadline and proc.poll() is None and states != {0: "COMPLETE", 1: "RUNNING"}:
            time.sleep(0.2)
            try:
                states = {n: s for n, (s, _, _) in _trials(out).items()}
            except Exception:  # not created yet, or locked by the search for a moment
                continue
        assert states == {0: "COMPLETE", 1: "RUNNING"}, (states, proc.poll())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    before = _trials(out)
    result = cli(*args)  # at once: trial 1 still looks alive
    assert "Traceback" not in result.output
    said = [line for line in result.stderr.splitlines() if "RUNNING" in line]
    assert len(said) == 1 and "trials 1 still RUNNING" in said[0] and "60 s" in said[0], result.stderr
    assert _trials(out)[0] == before[0] and _trials(out)[1][0] == "RUNNING"


# the report of a search -----------------------------------------------------------------------
def _same_values(finished: Path, out: Path, value: float = 1.0) -> Path:
    """``finished``'s output folder, but every trial reached ``value``: as a search of images that
    every probe classifies perfectly leaves it (the study rebuilt with Optuna's own API)."""
    import optuna

    out.mkdir()
    for name in ("best.json", "leaderboard.csv", "split.json"):
        shutil.copy(finished / name, out / name)
    source = optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{finished / 'study.db'}")
    study = optuna.create_study(
        study_name="autotransfer", storage=f"sqlite:///{out / 'study.db'}", direction="maximize"
    )
    for key, attr in source.user_attrs.items():
        study.set_user_attr(key, attr)
    for t in source.trials:
        study.add_trial(
            optuna.trial.create_trial(
                params=t.params,
                distributions=t.distributions,
                value=value,
                user_attrs=t.user_attrs,
                intermediate_values={step: value for step in t.intermediate_values},
            )
        )
    return out


def test_a_report_renders_when_every_trial_scored_the_same(messy_search, tmp_path):
    """`autotransfer report OUT` after every probe scored 1.0: fANOVA's zero total variance."""
    _, finished = messy_search
    out = _same_values(finished, tmp_path / "same")
    result = cli("report", out)
    assert result.output.split() == [str(out / "report.html"), str(out / "report.md")]
    markdown = (out / "report.md").read_text()
    importance = markdown.split("## Parameter importances", 1)[1].split("\n## ", 1)[0]
    assert "reached 1.0000" in importance and "|" not in importance  # a note, no table
    for title in ("Best configuration", "Leaderboard", "Accuracy by backbone", "Environment"):
        assert f"## {title}" in markdown


def test_the_report_points_to_failures_log_only_when_there_is_one(messy_search, tmp_path):
    import optuna

    _, finished = messy_search
    out = Path(shutil.copytree(finished, tmp_path / "out"))
    study = optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{out / 'study.db'}")
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)  # what a worker killed mid-trial leaves
    assert not (out / "failures.log").exists()
    cli("report", out)
    assert "failures.log" not in (out / "report.md").read_text()
    (out / "failures.log").write_text("Traceback (most recent call last):\n")
    cli("report", out)
    assert "tracebacks are in failures.log" in (out / "report.md").read_text()


# predict with some inputs unreadable ---------------------------------------------------------
def test_predict_predicts_the_readable_inputs_and_names_each_unreadable_one(messy, messy_search, tmp_path):
    data, _, bad = messy
    _, out = messy_search
    good = [data / "3" / "ziffer-drei-日本.png", data / "sieben-ü"]
    broken = [data / name for name in ("4/corrupt.png", "5/empty.png")] + [tmp_path / "typo.png"]
    folder = Path(shutil.copytree(data / "6", tmp_path / "six", symlinks=True))  # a loop and a dangling link
    result = cli(
        "predict", out / "model", good[0], broken[0], good[1], broken[1], broken[2], folder, expect=1
    )
    predicted = [line.split("\t")[0] for line in result.stdout.splitlines()]
    n_six = len([p for p in folder.iterdir() if not p.is_symlink()])
    assert len(predicted) == 1 + len(os.listdir(data / "sieben-ü")) + n_six
    assert str(good[0]) in predicted and not any("corrupt" in p or "empty" in p for p in predicted)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: skipped")]
    named = [*broken, folder / "loop.png", folder / "dangling.png"]
    for path in named:
        assert sum(str(path) in line for line in warnings) == 1, (path, result.stderr)
    assert len(warnings) == len(named)
    assert result.stderr.rstrip().splitlines()[-1].startswith(f"error: {len(named)} inputs could not be read")
    assert "Traceback" not in result.output
    # nothing readable at all: one error line after the names
    result = cli("predict", out / "model", *broken, expect=2)
    assert len([l for l in result.stderr.splitlines() if l.startswith("warning: skipped")]) == 3
    _one_line_error(result, "no readable image files")


def test_text_inputs_that_cannot_be_read_are_skipped_by_name(tmp_path):
    from autotransfer.plugins import default_host

    task = default_host().registry.get("tasks", "text-classification")
    (tmp_path / "good.txt").write_text("the team won the final", encoding="utf-8")
    (tmp_path / "latin.txt").write_bytes("café crème".encode("latin-1"))
    (tmp_path / "blank.txt").write_text("  \n", encoding="utf-8")
    (tmp_path / "rows.csv").write_text("text,label\nrates rose,money\n,sport\n", encoding="utf-8")
    (tmp_path / "nocolumn.csv").write_text("a,b,c\n1,2,3\n", encoding="utf-8")
    paths = [tmp_path / n for n in ("good.txt", "latin.txt", "blank.txt", "rows.csv", "nocolumn.csv", "nope")]
    dataset = task.load_unlabeled([str(p) for p in paths], None)
    assert dataset.items == [str(paths[0]), f"{paths[3]}:1"]
    assert len(dataset.notes) == 5
    for note, name in zip(dataset.notes, ["latin.txt", "blank.txt", "rows.csv:2", "nocolumn.csv", "nope"]):
        assert note.startswith("skipped ") and name in note, dataset.notes


# text tables ----------------------------------------------------------------------------------
def test_a_tab_separated_file_named_csv_is_read_with_a_note_and_a_guessed_label_is_said(tmp_path):
    """A TSV saved as .csv once said to pass --text-column, which then failed on 'text\\tlabel'; a
    label column taken because it was the only other one was not said."""
    path = tmp_path / "reviews.csv"
    path.write_text("review\tstars\n" + "".join(f"{t}\t{l}\n" for t, l in _texts()), encoding="utf-8")
    out = tmp_path / "out"
    result = cli("search", path, "-o", out, *TEXT)
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 2, result.stderr
    assert "reviews.csv" in notes[0] and "tabs" in notes[0]
    assert "'stars'" in notes[1] and "label" in notes[1] and "--label-column" in notes[1]
    assert sorted(read_json(out / "model" / "config.json")["classes"]) == ["money", "sport"]


# layouts --------------------------------------------------------------------------------------
def test_a_folder_of_images_without_class_folders_says_so_without_task(tmp_path):
    """Without --task it said "no task reads this layout" and listed every task's layout."""
    from autotransfer.features.demo import export_digits

    digits = export_digits(str(tmp_path / "digits"), per_class=2)
    flat = tmp_path / "flat"
    flat.mkdir()
    for image in digits.rglob("*.png"):
        shutil.copy(image, flat / f"{image.parent.name}-{image.name}")
    error = _one_line_error(
        cli("search", flat, "-o", tmp_path / "out", *TINY, expect=None), str(flat), "no class folders"
    )
    assert "sub-folder" in error and "20 image files" in error and "layout" not in error
    (tmp_path / "empty").mkdir()
    _one_line_error(cli("search", tmp_path / "empty", "-o", tmp_path / "out", expect=None), "empty")


def test_images_beside_the_class_folders_are_said_to_be_unused(tmp_path):
    from autotransfer.config import SearchConfig
    from autotransfer.engine.problem import load_inputs
    from autotransfer.features.demo import export_digits
    from autotransfer.plugins import default_host

    digits = export_digits(str(tmp_path / "digits"), per_class=3)
    shutil.copy(next((digits / "1").iterdir()), digits / "stray.png")
    with _stderr() as err:
        inputs = load_inputs(SearchConfig(data=str(digits), output=str(tmp_path / "o")), default_host())
    assert len(inputs.dataset) == 30 and "stray.png" not in inputs.dataset.items
    (line,) = [l for l in err.getvalue().splitlines() if "stray.png" in l]
    assert line.startswith("warning:") and "not used" in line and "class" in line


def _stderr():
    import contextlib
    import io

    return contextlib.redirect_stderr(io.StringIO())


@pytest.mark.parametrize("task", [None, "image-classification"])
def test_every_symlink_loop_is_skipped_with_exactly_one_warning(tmp_path, task):
    """Once skipped with a warning and sometimes without (or twice, when the task was detected)."""
    from autotransfer.config import SearchConfig
    from autotransfer.engine.problem import load_inputs
    from autotransfer.features.demo import export_digits
    from autotransfer.plugins import default_host

    data = export_digits(str(tmp_path / "digits"), per_class=3)
    images = sorted(str(p.relative_to(data)) for p in data.rglob("*.png"))
    (data / "5" / "a").mkdir()
    (data / "5" / "c").mkdir()
    shutil.move(str(data / "5" / images[15].split("/")[1]), data / "5" / "c" / "moved.png")
    images[15] = "5/c/moved.png"
    links = {
        "8/up": "..",  # back to the data folder: every class again, inside class 8
        "6/loop.png": "loop.png",  # an image link to itself
        "6/loop-dir": "loop-dir",  # a link to itself, no image name
        "5/a/b": "../c",  # a cycle of two links
        "5/c/d": "../a",
        "again": ".",  # the data folder inside itself
        "3-again": "3",  # a class folder as a second class
    }
    for name, target in links.items():
        os.symlink(target, data / name)
    config = SearchConfig(data=str(data), output=str(tmp_path / "o"), task=task)
    with _stderr() as err:
        inputs = load_inputs(config, default_host())
    assert sorted(inputs.dataset.items) == sorted(images)  # each image once, in its own class
    assert inputs.dataset.classes == [str(c) for c in range(10)]
    warnings = err.getvalue().splitlines()
    for name in links:
        said = [line for line in warnings if f"{data / name}:" in line]
        assert len(said) == 1 and said[0].startswith("warning: skipped"), (name, warnings)
    assert len(warnings) == len(links), warnings
