"""Bad input, as users have it: each case is a clear one-line error or is handled, and nothing good
is lost on the way."""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

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
        "6/loop.png": "cannot read",
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
    result = CliRunner().invoke(main, ["search", str(data), "-o", str(out), *TINY], catch_exceptions=False)
    reset_host()
    return result, out


def test_damaged_images_are_skipped_by_name_and_every_good_one_is_used(messy, messy_search):
    data, good, bad = messy
    result, out = messy_search
    assert result.exit_code == 0, result.output
    for name, reason in bad.items():
        line = next((l for l in result.stderr.splitlines() if name in l), None)
        assert line is not None and reason in line, (name, result.stderr)
    assert "loops back" in result.stderr and "8/up" in result.stderr
    split = read_json(out / "split.json")
    used = sorted(item for items in split.values() for item in items)
    assert used == good  # every readable image, whatever its mode or name; no damaged one; nothing twice
    assert any("日本" in item for item in used) and any("\\xff" in item for item in used)
    assert read_json(out / "best.json")["trials"] == {"complete": 1}


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


def test_predict_refuses_a_pickle_unless_trusted(messy, messy_search, tmp_path):
    import torch
    from safetensors.torch import load_file

    data, _, _ = messy
    _, out = messy_search
    assert {p.suffix for p in (out / "checkpoints").iterdir()} <= {".safetensors", ".json"}
    assert sorted(p.name for p in (out / "model").iterdir()) == ["config.json", "model.safetensors"]
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(out / "model" / "config.json", pickled)
    torch.save(load_file(out / "model" / "model.safetensors"), pickled / "model.pt")
    image = data / "3" / "ziffer-drei-日本.png"
    _one_line_error(cli("predict", pickled, image, expect=None), "model.pt", "pickle", "--trust-pickle")
    trusted = cli("predict", pickled, image, "--trust-pickle").output
    assert trusted == cli("predict", out / "model", image).output


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
