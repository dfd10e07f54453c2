"""Fuzzing what users feed a search: a seeded generator of broken image folders, text tables and
folders of texts (random truncation, random bytes, random encodings, random layouts).

No case may end in a traceback: each loads (with one-line warnings and notes), or is refused with one
line naming the file or the option. Most cases stop at loading, which is where bad input is met (the
same call a search makes first); a handful run a real 1-trial search through the command line, and a
second run on data damaged further must keep every trial the first one finished.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import random
import shutil
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import read_json
from PIL import Image

from autotransfer.cli import main
from autotransfer.config import SearchConfig
from autotransfer.engine.problem import open_problem
from autotransfer.errors import UserError
from autotransfer.plugins import default_host, reset_host

SEED = 15
N_IMAGE_FOLDERS, N_TABLES, N_TEXT_FOLDERS = 150, 120, 40
#: real searches: on this many image folders and tables that loaded
N_IMAGE_SEARCHES, N_TABLE_SEARCHES = 2, 1

WORDS = ["the", "match", "rates", "rose", "café", "naïve", "日本語", "😀", "a,b", 'say "hi"', "tab\there", ""]
LABELS = ["sport", "money", "1", "1.0", " sport ", "ü"]
CLASS_NAMES = ["cat", "dog", "7", "sieben-ü", "with space", "日本", "🐱", ".hidden", b"bytes-\xfe"]
ENCODINGS = ["utf-8"] * 6 + ["utf-8-sig", "utf-16", "latin-1", "cp1252", "shift_jis"]
FORMATS = {  # Pillow format: (suffix, modes it writes)
    "PNG": (".png", ["L", "RGB", "RGBA", "P", "1", "I;16", "LA"]),
    "JPEG": (".jpg", ["L", "RGB", "CMYK"]),
    "GIF": (".gif", ["P", "L"]),
    "BMP": (".bmp", ["L", "RGB", "P", "1"]),
    "TIFF": (".tif", ["L", "RGB", "RGBA", "I;16", "F", "CMYK"]),
    "WEBP": (".webp", ["RGB", "RGBA"]),
}


@dataclass
class Case:
    """One generated input: the data path, the options a user might add, and how it was made."""

    number: int
    data: Path
    options: dict = field(default_factory=dict)
    made: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"case {self.number} ({self.data.name}, {self.options}): " + "; ".join(self.made)


# damage -------------------------------------------------------------------------------------------
def damage(rng: random.Random, data: bytes, made: list[str], p: float = 0.5) -> bytes:
    """``data`` left alone (probability 1 - p) or broken in one of the ways files break."""
    if rng.random() > p or not data:
        return data
    how = rng.choice(["truncate", "flip", "garbage", "prefix", "empty", "nul", "append"])
    made.append(how)
    at = rng.randrange(len(data))
    if how == "truncate":
        return data[:at]
    if how == "flip":
        broken = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            broken[rng.randrange(len(broken))] = rng.randrange(256)
        return bytes(broken)
    if how == "garbage":
        return rng.randbytes(rng.randint(1, 2000))
    if how == "prefix":
        return rng.randbytes(rng.randint(1, 16)) + data
    if how == "empty":
        return b""
    if how == "nul":
        return data[:at] + b"\0" * rng.randint(1, 64) + data[at:]
    return data + rng.randbytes(rng.randint(1, 200))


def image_bytes(rng: random.Random, made: list[str]) -> tuple[bytes, str]:
    """A real image in a random format, mode and size (sometimes a decompression bomb's header)."""
    if rng.random() < 0.02:
        made.append("bomb")
        return _png_header(40000, 40000), ".png"
    name = rng.choice(sorted(FORMATS))
    suffix, modes = FORMATS[name]
    mode = rng.choice(modes)
    width, height = rng.randint(1, 40), rng.randint(1, 40)
    pixels = np.random.default_rng(rng.randrange(2**32)).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB").convert(mode if mode not in ("I;16", "F") else "L")
    if mode == "I;16":
        image = Image.fromarray(np.asarray(image, np.uint16) * 257)
    elif mode == "F":
        image = Image.fromarray(np.asarray(image, np.float32) / 255)
    buffer = io.BytesIO()
    image.save(buffer, format=name)
    made.append(f"{name}/{mode}/{width}x{height}")
    return buffer.getvalue(), suffix


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _write(folder: Path, name, content: bytes) -> None:
    """``name`` may be bytes: a file name that is not UTF-8, as old archives have."""
    target = os.path.join(os.fsencode(folder), name if isinstance(name, bytes) else os.fsencode(name))
    with open(target, "wb") as f:
        f.write(content)


def _folder(parent: Path, name) -> Path:
    path = os.path.join(os.fsencode(parent), name if isinstance(name, bytes) else os.fsencode(name))
    os.makedirs(path, exist_ok=True)
    return Path(os.fsdecode(path))


def _links(rng: random.Random, data: Path, folders: list[Path], made: list[str]) -> None:
    """Links as folders collect them: to themselves, nowhere, back up, to a sibling class."""
    for folder in rng.sample(folders, k=min(len(folders), rng.randint(0, 2))):
        kind = rng.choice(["self", "dangling", "up", "root", "sibling", "file-loop"])
        made.append(f"link:{kind}")
        name = folder / f"link-{kind}{rng.choice(['', '.png'])}"
        target = {
            "self": name.name,
            "dangling": "missing.png",
            "up": "..",
            "root": os.path.relpath(data, folder),
            "sibling": os.path.relpath(rng.choice(folders), folder),
            "file-loop": name.name,
        }[kind]
        with contextlib.suppress(FileExistsError):
            os.symlink(target, name)


# generators ---------------------------------------------------------------------------------------
def image_folder(rng: random.Random, root: Path, number: int) -> Case:
    data = root / "images"
    data.mkdir()
    case = Case(number, data)
    layout = rng.choice(["classes", "classes", "classes", "flat", "nested", "empty", "mixed", "few"])
    case.made.append(layout)
    folders = []
    if layout == "flat":
        folders = [data]
    elif layout != "empty":
        names = rng.sample(CLASS_NAMES, k=rng.randint(1, 4)) if layout != "few" else ["a", "b"]
        folders = [_folder(data, n) for n in names]
        if layout == "nested":
            folders += [_folder(f, rng.choice(["sub", "deeper/still", ".cache"])) for f in folders]
        if layout == "mixed":
            folders.append(data)
    for folder in folders:
        for i in range(rng.randint(0, 7) if layout != "few" else 2):
            content, suffix = image_bytes(rng, case.made)
            content = damage(rng, content, case.made, p=0.3)
            if rng.random() < 0.05:
                suffix = rng.choice([".txt", ".PNG", ".jpeg", "", ".png.bak"])
            name = rng.choice(
                [
                    f"{i}{suffix}",
                    f"img {i}{suffix}",
                    f"ü-{i}{suffix}",
                    f"{i}".encode() + b"\xff" + suffix.encode(),
                ]
            )
            _write(folder, name, content)
        if rng.random() < 0.2:
            _write(folder, rng.choice([".DS_Store", "Thumbs.db", "notes.txt", "._0.png"]), rng.randbytes(40))
    if folders and rng.random() < 0.3:
        _links(rng, data, [f for f in folders if f != data] or folders, case.made)
    if rng.random() < 0.05:
        _write(data, "cat", b"a file where a class folder would be")
    return case


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8)))


def _rows(rng: random.Random) -> list[tuple[str, str]]:
    n = rng.choice([0, 2, 8, 12, 12, 20])
    labels = rng.sample(LABELS, k=rng.choice([1, 2, 2, 2, 3]))
    rows = [[_text(rng), labels[i % len(labels)]] for i in range(n)]
    if rows and rng.random() < 0.1:  # a row without its text or label
        rows[rng.randrange(n)][rng.randrange(2)] = ""
    return [tuple(row) for row in rows]


def table(rng: random.Random, root: Path, number: int) -> Case:
    suffix = rng.choice([".csv", ".csv", ".csv", ".tsv", ".jsonl", ".CSV", ".tab", ".txt"])
    path = root / f"table{suffix}"
    case = Case(number, path)
    header = rng.choice(
        [("text", "label")] * 3 + [("review", "stars"), ("a", "b"), ("label", "text", "id"), ("text",), None]
    )
    rows = _rows(rng)
    if suffix == ".jsonl":
        lines = [
            json.dumps(dict(zip(header or ("text", "label"), r)), ensure_ascii=rng.random() < 0.5)
            for r in rows
        ]
        if rng.random() < 0.2:
            lines.insert(rng.randint(0, len(lines)), rng.choice(["[1, 2]", "{broken", "null", '"text"']))
        text = "\n".join(lines)
    else:
        delimiter = rng.choice([",", "\t", ";", "|"])
        quoted = rng.random() < 0.7  # else fields written as they are, as hand-made files have them
        buffer = io.StringIO()
        writer = csv.writer(
            buffer, delimiter=delimiter, quoting=rng.choice([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])
        )
        width = len(header or ("text", "label"))
        for fields in ([header] if header else []) + [(t, l, "x")[:width] for t, l in rows]:
            if quoted:
                writer.writerow(fields)
            else:
                buffer.write(delimiter.join(fields) + "\n")
        text = buffer.getvalue()
        if rng.random() < 0.1:
            text = text.replace("\r\n", "\r")
        if rng.random() < 0.05:
            text += "y" * 140_000 + delimiter + "sport\n"  # a field longer than csv's limit
        case.made.append(f"delimiter {delimiter!r}")
    encoding = rng.choice(ENCODINGS)
    case.made += [f"header {header}", f"{len(rows)} rows", encoding]
    path.write_bytes(damage(rng, text.encode(encoding, errors="replace"), case.made, p=0.3))
    if encoding not in ("utf-8", "utf-8-sig") and rng.random() < 0.7:
        case.options["encoding"] = rng.choice([encoding, encoding, "latin-1", "no-such-codec"])
    if rng.random() < 0.15:
        case.options[rng.choice(["text_column", "label_column"])] = rng.choice(["text", "label", "b", "nope"])
    return case


def text_folder(rng: random.Random, root: Path, number: int) -> Case:
    data = root / "texts"
    data.mkdir()
    case = Case(number, data)
    encoding = rng.choice(ENCODINGS)  # one for the folder, as a tool wrote them; sometimes one file differs
    case.made.append(encoding)
    for name in rng.sample(CLASS_NAMES, k=rng.choice([0, 1, 2, 2, 3])):
        folder = _folder(data, name)
        for i in range(rng.choice([0, 1, 3, 4, 6])):
            this = encoding if rng.random() < 0.95 else rng.choice(ENCODINGS)
            content = damage(rng, _text(rng).encode(this, errors="replace"), case.made, p=0.1)
            _write(folder, rng.choice([f"{i}.txt", f"{i}.txt", f"{i}.md", f"{i}.TXT"]), content)
    if encoding not in ("utf-8", "utf-8-sig") and rng.random() < 0.7 or rng.random() < 0.05:
        case.options["encoding"] = rng.choice([encoding, encoding, "latin-1", "no-such-codec"])
    return case


def cases(kind, n: int, root: Path, offset: int):
    for i in range(n):
        rng = random.Random(f"{SEED}-{kind.__name__}-{i}")
        folder = root / f"{kind.__name__}-{i}"
        folder.mkdir()
        case = kind(rng, folder, offset + i)
        if rng.random() < 0.1:  # the task named, sometimes the wrong one
            case.options["task"] = rng.choice(["image-classification", "text-classification", "no-such-task"])
        yield case


# what must hold -----------------------------------------------------------------------------------
def load(case: Case, out: Path):
    """Load ``case`` as a search does first: (the problem or None, the one-line error or None, stderr)."""
    config = SearchConfig(data=str(case.data), output=str(out), quiet=True, **case.options)
    err = io.StringIO()
    # a Python warning (a library's) would print two lines, one of them the library's source: none may
    with contextlib.redirect_stderr(err), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            problem = open_problem(config, default_host())
        except UserError as exc:
            problem, error = None, str(exc)
        except Exception as exc:  # the failure this test looks for: say which case, keep the traceback
            raise AssertionError(f"{case}: {type(exc).__name__}: {exc}") from exc
        else:
            problem.close()
            error = None
    assert not caught, f"{case}: {[f'{w.category.__name__}: {w.message}' for w in caught]}"
    return problem, error, err.getvalue()


def command_line(case: Case, out: Path) -> list[str]:
    options = [f"--{k.replace('_', '-')}={v}" for k, v in case.options.items()]
    return ["search", case.data, "-o", out, *options]


def check_loaded(case: Case, problem, error: str | None, stderr: str) -> None:
    for line in stderr.splitlines():
        assert line.startswith(("warning: ", "note: ")), f"{case}: {line!r}"
    if error is not None:
        assert error.strip() and "\n" not in error, f"{case}: {error!r}"
        named = [str(case.data), case.data.name, "--", *map(str, case.options.values())]
        assert any(n in error for n in named), (
            f"{case}: the error names neither the data nor an option: {error}"
        )
        return
    assert len(problem.dataset) == sum(map(len, problem.split.values())) and len(problem.dataset.classes) >= 2


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Every case loaded as a search loads it, and each refused one run through the command line too;
    returns (case, problem or None, error or None) for each."""
    root = tmp_path_factory.mktemp("fuzz")
    generated = [
        *cases(image_folder, N_IMAGE_FOLDERS, root, 0),
        *cases(table, N_TABLES, root, N_IMAGE_FOLDERS),
        *cases(text_folder, N_TEXT_FOLDERS, root, N_IMAGE_FOLDERS + N_TABLES),
    ]
    outcomes = []
    for case in generated:
        problem, error, stderr = load(case, root / "out")
        check_loaded(case, problem, error, stderr)
        if error is not None:  # refused: the command says it in one line, nothing else
            result = _search(command_line(case, root / "out"))
            said = [*stderr.splitlines(), f"error: {error}"]
            # as a terminal shows them: bytes of file names that are not UTF-8 escaped
            shown = [line.encode("utf-8", "backslashreplace").decode() for line in said]
            assert result.exit_code == 2 and result.stderr.splitlines() == shown, f"{case}: {result.output}"
        outcomes.append((case, problem, error))
    reset_host()
    return outcomes


def test_no_generated_input_ends_in_a_traceback(loaded):
    assert len(loaded) == N_IMAGE_FOLDERS + N_TABLES + N_TEXT_FOLDERS
    refused = [error for _, _, error in loaded if error]
    worked = [case for case, problem, _ in loaded if problem is not None]
    # the generator makes both kinds, and more than one kind of mistake
    assert len(worked) >= 20 and len(refused) >= 100, (len(worked), len(refused))
    assert len({error.split(": ", 1)[-1][:25] for error in refused}) >= 10


def _search(args: list[str]):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    reset_host()
    assert "Traceback" not in result.output
    return result


def _finished(out: Path) -> dict:
    study = optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{out / 'study.db'}")
    return {t.number: (t.state.name, t.value, t.params) for t in study.trials if t.state.is_finished()}


IMAGE_SEARCH = ["--image-size", "32", "--backbones", "tf_efficientnet_lite0"]
TABLE_SEARCH = ["--backbones", "all-MiniLM-L6-v2", "--max-length", "16"]
QUICK = ["--strategies", "linear-probe", "--max-epochs", "1", "--no-reference", "--no-rank", "--quiet"]


def test_searches_that_start_keep_every_finished_trial(loaded, tmp_path):
    rng = random.Random(SEED)
    images = [c for c, p, _ in loaded if p is not None and p.modality == "image" and not c.options]
    tables = [c for c, p, _ in loaded if p is not None and p.modality == "text" and c.data.is_file()]
    chosen = [(c, IMAGE_SEARCH) for c in images[:N_IMAGE_SEARCHES]] + [
        (c, TABLE_SEARCH) for c in tables[:N_TABLE_SEARCHES]
    ]
    assert len(chosen) == N_IMAGE_SEARCHES + N_TABLE_SEARCHES
    for case, settings in chosen:
        out = tmp_path / f"out-{case.number}"
        args = [*command_line(case, out), *settings, *QUICK]
        first = _search([*args, "--n-trials", "1"])
        assert first.exit_code in (0, 1), f"{case}: {first.output}"
        kept = _finished(out)
        assert len(kept) == 1, f"{case}: {first.output}"
        board = pd.read_csv(out / "leaderboard.csv")
        assert set(kept) <= set(board["number"]), f"{case}: {board}"
        if first.exit_code == 0:
            assert read_json(out / "best.json")["trials"].get("complete") == 1
        # more damage arrives in the data, and the same command runs again for one more trial
        if case.data.is_dir():
            for folder in [p for p in case.data.rglob("*") if p.is_dir() and not p.is_symlink()][:3]:
                content, suffix = image_bytes(rng, case.made)
                (folder / f"late{suffix}").write_bytes(damage(rng, content, case.made, p=1.0))
        second = _search([*args, "--n-trials", "2"])
        assert second.exit_code in (0, 1), f"{case}: {second.output}"
        after = _finished(out)
        assert {n: after.get(n) for n in kept} == kept, f"{case}: a finished trial changed or went missing"
        assert len(after) == 2, f"{case}: {second.output}"
        shutil.rmtree(out / "cache", ignore_errors=True)
