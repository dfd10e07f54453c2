"""Text classification: a CSV, TSV or JSONL file with a text and a label column, or a folder per
class of .txt files.

Columns are detected by name (text, sentence, review...; label, class, category...) or, with two
columns, by content; ``--text-column`` / ``--label-column`` settle the rest. Labels are kept as the
text written (``1`` and ``1.0`` are two classes). Texts are tokenised once per tokenizer and
maximum length (the backbone's ``preprocessing``) into padded ``input_ids`` / ``attention_mask``
tensors; each batch is trimmed to its longest text.
"""

from __future__ import annotations

import codecs
import csv
import functools
import json
import sys
from pathlib import Path

from autotransfer import hookimpl
from autotransfer.errors import UserError
from autotransfer.specs import TEXT, TaskSpec

__version__ = "0.1.0"

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".jsonl": None, ".ndjson": None}
TEXT_NAMES = (
    "text",
    "sentence",
    "review",
    "content",
    "document",
    "body",
    "comment",
    "message",
    "tweet",
    "abstract",
    "description",
    "utterance",
    "question",
    "review_text",
    "text_a",
)
LABEL_NAMES = ("label", "labels", "class", "category", "target", "topic", "sentiment", "intent", "y", "tag")


def _option(options, name: str):
    """A setting from the ``TaskOptions`` the search passes (None when not given)."""
    return getattr(options, name, None)


# reading files --------------------------------------------------------------------------------
def _read_text(path: Path, encoding: str | None = None) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
    try:
        return raw.decode(encoding or "utf-8-sig")
    except LookupError:
        raise UserError(
            f"--encoding {encoding}: unknown encoding; use a Python codec name such as latin-1 or cp1252"
        ) from None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{path}: not {encoding or 'UTF-8'} text (byte 0x{raw[exc.start]:02x} on line {line}); "
            "give its encoding with --encoding (for example --encoding latin-1 or cp1252), or re-save it "
            "as UTF-8"
        ) from None


def _read_table(path: Path, encoding: str | None) -> tuple[list[str], list[dict]]:
    """(column names, rows as dicts of strings); JSON numbers and booleans kept as written."""
    text = _read_text(path, encoding)
    delimiter = TABLE_SUFFIXES[path.suffix.lower()]
    if delimiter is None:
        rows, columns = [], {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(
                    f"{path}: line {number} is not JSON ({exc.msg}); write one JSON object per line"
                ) from None
            if not isinstance(row, dict):
                raise UserError(f"{path}: line {number} is not a JSON object; write one object per line")
            rows.append({k: v if isinstance(v, str) or v is None else json.dumps(v) for k, v in row.items()})
            columns.update(dict.fromkeys(row))
        return list(columns), rows
    delimiter = _delimiter(path, text, delimiter)
    try:
        reader = csv.DictReader(text.splitlines(keepends=True), delimiter=delimiter)
        columns = [c for c in (reader.fieldnames or [])]
        rows = [row for row in reader if any((v or "").strip() for k, v in row.items() if k is not None)]
    except csv.Error as exc:
        raise UserError(f"{path}: not a readable {path.suffix[1:].upper()} file ({exc})") from None
    return columns, rows


DELIMITER_NAMES = {",": "commas", "\t": "tabs", ";": "semicolons", "|": "bars"}


def _delimiter(path: Path, text: str, expected: str) -> str:
    """The separator the file uses: the one its suffix says, unless its header line has none of that
    and does have another one (a TSV saved as .csv, a European CSV with semicolons); said in a note."""
    header = next((line for line in text.splitlines() if line.strip()), "")
    if expected in header:
        return expected
    counts = {d: header.count(d) for d in DELIMITER_NAMES if d != expected}
    found = max(counts, key=counts.get)
    if not counts[found]:
        return expected
    print(
        f"note: {path}: its columns are separated by {DELIMITER_NAMES[found]}, not "
        f"{DELIMITER_NAMES[expected]}; reading it that way",
        file=sys.stderr,
    )
    return found


def _pick_column(
    path: Path, columns: list[str], rows: list[dict], config, kind: str, exclude: str | None = None
) -> str:
    given = _option(config, f"{kind}_column")
    found = ", ".join(columns) or "none"
    if given:
        if given not in columns:
            raise UserError(f"{path}: no column {given!r} (--{kind}-column); columns found: {found}")
        return given
    names = TEXT_NAMES if kind == "text" else LABEL_NAMES
    by_lower = {c.strip().lower(): c for c in columns if c is not None}
    matches = [by_lower[n] for n in names if n in by_lower and by_lower[n] != exclude]
    if matches:
        return matches[0]
    others = [c for c in columns if c != exclude]
    if kind == "label" and exclude is not None and len(others) == 1:
        return _guessed(path, others[0], kind, f"the only column besides the text column {exclude!r}")
    if kind == "text" and len(columns) == 2:
        # two unnamed columns: the text is the one with longer, more varied values
        def score(c):
            values = [r.get(c) or "" for r in rows]
            return (len(set(values)), sum(map(len, values)))

        first, second = sorted(columns, key=score, reverse=True)
        if score(first)[0] > score(second)[0] and score(first)[1] > score(second)[1]:
            return _guessed(path, first, kind, "its values are longer and more varied")
    raise UserError(
        f"{path}: cannot tell which column holds the {kind}; columns found: {found}; "
        f"pass --{kind}-column NAME"
    )


def _guessed(path: Path, column: str, kind: str, why: str) -> str:
    """A column chosen by guess, not by name: say which, so a wrong guess is seen before a search."""
    print(
        f"note: {path}: took column {column!r} as the {kind} ({why}); pass --{kind}-column NAME to choose "
        "another",
        file=sys.stderr,
    )
    return column


def _check_texts(where: Path, texts: list[str], names: list[str]) -> None:
    empty = [n for n, t in zip(names, texts) if not (t or "").strip()]
    if empty:
        more = f" and {len(empty) - 1} more" if len(empty) > 1 else ""
        raise UserError(f"{where}: empty text at {empty[0]}{more}; fill in or remove those rows")


def _table_examples(path: Path, config):
    columns, rows = _read_table(path, _option(config, "encoding"))
    if not rows:
        raise UserError(
            f"{path}: no rows"
            + (f" under the header ({', '.join(columns)})" if columns else "")
            + "; add one example per row"
        )
    text_column = _pick_column(path, columns, rows, config, "text")
    names = [f"{path.name}:{i}" for i in range(1, len(rows) + 1)]
    texts = [row.get(text_column) or "" for row in rows]
    _check_texts(path, texts, [f"row {i} (column {text_column!r})" for i in range(1, len(rows) + 1)])
    label_column = _pick_column(path, columns, rows, config, "label", exclude=text_column)
    labels = [(row.get(label_column) or "").strip() for row in rows]
    blank = [i for i, label in enumerate(labels, 1) if not label]
    if blank:
        raise UserError(
            f"{path}: empty label at row {blank[0]}"
            + (f" and {len(blank) - 1} more" if len(blank) > 1 else "")
            + f" (column {label_column!r}); label every row or remove it"
        )
    return names, texts, labels


def _text_files(folder: Path) -> list[Path]:
    return sorted(_iter_text_files(folder))


def _iter_text_files(folder: Path):
    """The .txt files under ``folder`` (.TXT too), hidden ones and those in hidden folders left out."""
    return (
        p
        for p in folder.rglob("*")
        if p.suffix.lower() == ".txt"
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


# the task -------------------------------------------------------------------------------------
def detect(path: str) -> bool:
    root = Path(path)
    if root.is_file():
        return root.suffix.lower() in TABLE_SUFFIXES
    if not root.is_dir():
        return False
    return any(next(_iter_text_files(d), None) is not None for d in _class_dirs(root)[:50])


def load(path: str, config=None):
    from autotransfer.data import Dataset, check_labels

    root = Path(path)
    if not root.exists():
        raise UserError(
            f"{path}: no such file or folder; give a CSV, TSV or JSONL file with text and label "
            "columns, or a folder with one sub-folder of .txt files per class"
        )
    if root.is_file():
        if root.suffix.lower() not in TABLE_SUFFIXES:
            raise UserError(f"{path}: not a CSV, TSV or JSONL file; give one with a text and a label column")
        items, texts, names = _table_examples(root, config)
        classes = sorted(set(names))
        position = {c: i for i, c in enumerate(classes)}
        labels = [position[n] for n in names]
    else:
        items, texts, labels, classes = [], [], [], []
        for class_dir in _class_dirs(root):
            files = _text_files(class_dir)
            if not files:
                raise UserError(f"{class_dir}: class folder has no .txt files; add some or remove the folder")
            classes.append(class_dir.name)
            for f in files:
                items.append(str(f.relative_to(root)))
                texts.append(_read_text(f, _option(config, "encoding")))
                labels.append(len(classes) - 1)
        if not classes:
            raise UserError(
                f"{path}: no class folders; put each class's .txt files in a sub-folder named after it"
            )
        _check_texts(root, texts, items)
    dataset = Dataset(
        root=str(root.resolve()),
        task="text-classification",
        modality=TEXT,
        items=items,
        labels=labels,
        classes=classes,
        encode=lambda indices, preprocessing: tokenize([texts[i] for i in indices], preprocessing),
        prepare=prepare,
        input_size=typical_tokens(texts),
    )
    check_labels(dataset, str(path))
    return dataset


#: sub-word tokens per whitespace-separated word, roughly, for English with a WordPiece or BPE vocabulary
TOKENS_PER_WORD = 1.3


def typical_tokens(texts: list[str]) -> int:
    """The median text's length in tokens, estimated from its words (no tokenizer needed yet)."""
    lengths = sorted(len(t.split()) for t in texts)
    return max(1, round(lengths[len(lengths) // 2] * TOKENS_PER_WORD)) if lengths else 1


def input_sizes(dataset, native: int) -> list[int]:
    """Text lengths worth searching (``max_length``, in tokens): powers of two from the median text's
    length (at least 32) to the backbone's ``native`` one; texts longer than that also get an eighth, a
    quarter and a half of it (at least 32), cheaper, shorter reads (a transformer's cost grows with the
    length; a first probe on a small budget reads the opening tokens only)."""
    native = int(native)
    own = dataset.input_size or native
    low = 32
    while low < min(own, native):
        low *= 2
    if low >= native:
        return sorted({max(32, native // 8), max(32, native // 4), max(32, native // 2), native})
    sizes, size = set(), low
    while size < native:
        sizes.add(size)
        size *= 2
    return sorted(sizes | {native})


def load_unlabeled(paths, config=None):
    """Tables (their text column; any label column is ignored), .txt files, or folders of them.

    An input that cannot be read (a missing path, a file that is not text in the encoding, an empty
    text, a table without a text column, a folder without .txt files) is skipped, not fatal: each is
    named in one warning on stderr and listed in the dataset's ``notes`` (``skipped NAME: why``), so
    ``predict`` predicts the others and says what it left out. Only when nothing readable is left is it
    an error; an unknown ``--encoding`` is one at once (it is no file's fault)."""
    from autotransfer.data import Dataset

    encoding = _option(config, "encoding")
    if encoding:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise UserError(
                f"--encoding {encoding}: unknown encoding; use a Python codec name such as latin-1 or cp1252"
            ) from None
    items, texts, skipped = [], [], []

    def add(item: str, read) -> None:
        try:
            text = read()
        except UserError as exc:  # the message names the file
            skipped.append(f"skipped {exc}")
            return
        if not text.strip():
            skipped.append(f"skipped {item}: empty text")
            return
        items.append(item)
        texts.append(text)

    for ref in paths:
        p = Path(ref)
        if p.is_dir():
            files = _text_files(p)
            if not files:
                skipped.append(f"skipped {ref}: no .txt files in this folder")
            for f in files:
                add(str(f), functools.partial(_read_text, f, encoding))
        elif p.is_file() and p.suffix.lower() in TABLE_SUFFIXES:
            try:
                columns, rows = _read_table(p, encoding)
                if not rows:
                    raise UserError(f"{p}: no rows; add one text per row")
                column = _pick_column(p, columns, rows, config, "text")
            except UserError as exc:
                skipped.append(f"skipped {exc}")
                continue
            for number, row in enumerate(rows, 1):
                add(f"{ref}:{number}", lambda row=row, column=column: row.get(column) or "")
        elif p.is_file():
            add(str(ref), functools.partial(_read_text, p, encoding))
        else:
            skipped.append(f"skipped {ref}: no such file or folder")
    for note in skipped:
        print(f"warning: {note}", file=sys.stderr)
    if not items:
        raise UserError(
            f"{', '.join(map(str, paths))}: no texts found"
            + (f" ({len(skipped)} inputs skipped, each named above)" if skipped else "")
            + "; give .txt files, folders of them, or a CSV, TSV or JSONL file with a text column"
        )
    return Dataset(
        root="",
        task="text-classification",
        modality=TEXT,
        items=items,
        labels=None,
        classes=[],
        encode=lambda indices, preprocessing: tokenize([texts[i] for i in indices], preprocessing),
        prepare=prepare,
        notes=skipped,
    )


@functools.lru_cache(maxsize=4)
def tokenizer_for(source: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=Path(source).is_dir())
    except Exception as exc:
        raise UserError(
            f"tokenizer {source!r}: cannot load it "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
            "; the backbone's folder or package may have moved"
        ) from exc


def tokenize(texts: list[str], preprocessing: dict) -> dict:
    """Every text once, truncated to ``max_length`` and padded to the longest: int tensors (N, L)."""
    if "tokenizer" not in preprocessing:
        raise UserError(
            "text data needs a text backbone (one whose preprocessing names a tokenizer); "
            "see `autotransfer backbones`"
        )
    tokenizer = tokenizer_for(preprocessing["tokenizer"])
    encoded = tokenizer(
        texts,
        truncation=True,
        max_length=int(preprocessing["max_length"]),
        padding="longest",
        return_tensors="pt",
    )
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def prepare(batch, preprocessing, train=False, augment="off"):
    """Drop the columns that are padding in every text of the batch: they cost compute and change
    nothing (left- or right-padded alike)."""
    used = batch["attention_mask"].any(0)
    if not bool(used.any()):
        return batch
    return {k: v[:, used] for k, v in batch.items()}


@hookimpl
def register_tasks(register):
    register(
        TaskSpec(
            name="text-classification",
            modality=TEXT,
            description="a CSV, TSV or JSONL file with a text and a label column, or a folder per class "
            "of .txt files",
            detect=detect,
            load=load,
            load_unlabeled=load_unlabeled,
            layouts=("DATA.csv|.tsv|.jsonl with text and label columns", "DATA/CLASS_NAME/TEXT_FILE.txt"),
            size_key="max_length",
            input_sizes=input_sizes,
            size_power=1.0,
        )
    )
