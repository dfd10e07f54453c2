"""Image classification: a folder per class of image files, any size, grey or colour.

Files are decoded once per preprocessing (size, interpolation) into a uint8 tensor; normalisation
and augmentation run on tensors, on the training device.
"""

from __future__ import annotations

import errno
import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from autotransfer import hookimpl
from autotransfer.errors import UserError
from autotransfer.specs import IMAGE, TaskSpec

__version__ = "0.1.0"

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _class_dirs(root: Path, skipped: list[str] | None = None) -> list[Path]:
    """The sub-folders of ``root``, sorted; links among them that loop or lead to another of them are
    left out (see ``_walk_images``)."""
    dirs = []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        why = _link_problem(str(root), p.name, str(root))
        if why:
            _skip(skipped, p, why)
        elif p.is_dir():
            dirs.append(p)
    return dirs


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _link_problem(dirpath: str, name: str, root: str | None) -> str | None:
    """Why the folder entry ``name`` is a link not to follow, or None. A link that loops would walk in
    circles; a folder link to somewhere inside the data folder ``root`` would read images a second
    time, in another class (they are read where they are)."""
    path = os.path.join(dirpath, name)
    if not os.path.islink(path):
        return None
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link that leads back to itself; fix or remove it"
        return None  # dangling: not a folder, and an image file's check says why
    if not os.path.isdir(path):
        return None
    here, target = os.path.realpath(dirpath), os.path.realpath(path)
    if _inside(here, target):
        return "a link that loops back above itself"
    if root is not None and _inside(target, os.path.realpath(root)):
        where = os.path.relpath(target, os.path.realpath(root))
        return f"a link to {_item_name(Path(where))} in the same data folder, whose images are read there"
    return None


def _skip(skipped: list[str] | None, path, why: str) -> None:
    if skipped is not None:
        skipped.append(f"skipped {_item_name(Path(path))}: {why}")


def _walk_images(folder: Path, skipped: list[str] | None = None, root: Path | None = None) -> list[Path]:
    """Image files under ``folder``, sorted, following folder links once. Links that would walk in
    circles or read images twice (see ``_link_problem``; ``root`` is the labelled data folder, when
    there is one), or lead to a folder already read, are left out, each named once in ``skipped`` when
    given (``detect`` only looks: it passes none)."""
    found, seen = [], {}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            if os.path.islink(dirpath):
                _skip(skipped, dirpath, f"a link to {_item_name(Path(seen[real]))}, which is read already")
            continue
        seen[real] = dirpath
        kept = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            why = _link_problem(dirpath, d, root and str(root))
            if why:
                _skip(skipped, Path(dirpath) / d, why)
            else:
                kept.append(d)
        dirnames[:] = kept
        for f in sorted(filenames):
            if f.startswith("."):
                continue
            why = _link_problem(dirpath, f, None)  # links that loop are no folders to os.walk: they land here
            if why:
                _skip(skipped, Path(dirpath) / f, why)
            elif _is_image(Path(f)):
                found.append(Path(dirpath) / f)
    return sorted(found)


def _files(n: int) -> str:
    return f"{n} image file" + ("s" if n != 1 else "")


def _item_name(path: Path) -> str:
    """The path as text that stores and prints anywhere: bytes that are not UTF-8 become escapes."""
    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def detect(path: str) -> bool:
    """A folder whose class folders hold images; or a folder of images and no sub-folders at all, which
    this task reads best of all tasks: ``load`` then says how to lay it out (one folder per class)."""
    root = Path(path)
    if not root.is_dir():
        return False
    class_dirs = _class_dirs(root)
    if not class_dirs:
        return bool(_loose_images(root)[:1])
    return any(_walk_images(d)[:1] for d in class_dirs[:50])


def _loose_images(root: Path) -> list[Path]:
    """Image files lying directly in ``root``, in no class folder."""
    return sorted(p for p in root.iterdir() if _is_image(p) and not p.is_dir())


def _inspect_all(files: list[Path]) -> tuple[list[tuple[str | None, int | None]], list[str]]:
    """``_inspect`` of every file, in parallel; and one line per file Pillow warned about while
    decoding it (a damaged tag, a very large image), as ``NAME: Pillow says ...``: its warnings name no
    file and span two lines, so they are caught here and said the way every other warning is."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
            inspected = list(pool.map(_inspect, files))
    said = []
    if caught:  # which files: again one at a time (rare, so the cost is too)
        for file, (problem, _) in zip(files, inspected):
            if problem is None:
                with warnings.catch_warnings(record=True) as mine:
                    warnings.simplefilter("always")
                    _inspect(file)
                for message in dict.fromkeys(str(w.message).splitlines()[0] for w in mine if str(w.message)):
                    said.append(f"{_item_name(file)}: Pillow says {message!r}; it is used as decoded")
    return inspected, said


def _inspect(path: Path) -> tuple[str | None, int | None]:
    """(None, the longer side in pixels) when the file decodes, else (the reason, None)."""
    from PIL import Image

    try:
        if path.stat().st_size == 0:
            return "empty file", None
        with Image.open(path) as image:
            image.load()
            return None, max(image.size)
    except Image.DecompressionBombError as exc:
        return f"too large to decode safely ({exc}); downscale it", None
    except OSError as exc:
        if exc.errno is not None:  # unreadable: permissions, a link loop, a dangling link
            return f"cannot read it ({exc.strerror})", None
        return f"cannot decode it ({exc})".splitlines()[0], None
    except Exception as exc:  # PIL raises many types for broken files
        return f"cannot decode it ({type(exc).__name__}: {exc})".splitlines()[0], None


#: how many sizes the search tries, and their step: EfficientNet-style networks halve the side five times
N_SIZES = 4
SIZE_STEP = 32


def input_sizes(dataset, native: int) -> list[int]:
    """Resolutions worth searching: up to four, from the images' own size (rounded up to a multiple
    of 32, at least 32) to the backbone's ``native`` one, evenly spread on a log scale. Images as
    large as the backbone's own get half that size too: a cheaper, coarser look."""
    native = int(native)
    own = dataset.input_size or native
    low = min(native, max(SIZE_STEP, -(-own // SIZE_STEP) * SIZE_STEP))
    if low >= native:
        return sorted({max(SIZE_STEP, native // 2 // SIZE_STEP * SIZE_STEP), native})
    points = [low * (native / low) ** (i / (N_SIZES - 1)) for i in range(N_SIZES)]
    sizes = {min(native, max(low, round(p / SIZE_STEP) * SIZE_STEP)) for p in points}
    return sorted(sizes | {native})


def load(path: str, config=None):
    from autotransfer.data import Dataset

    root = Path(path)
    if not root.exists():
        raise UserError(f"{path}: no such folder; give a folder with one sub-folder of images per class")
    if not root.is_dir():
        raise UserError(f"{path}: not a folder; give a folder with one sub-folder of images per class")
    walked: list[str] = []  # links that would walk in circles or read a folder twice
    class_dirs = _class_dirs(root, walked)
    loose = _loose_images(root)
    if not class_dirs:
        found = f" (it holds {_files(len(loose))} directly)" if loose else ""
        raise UserError(
            f"{path}: no class folders{found}; put each class's images in a sub-folder named after it"
        )
    if loose:
        print(
            f"warning: {path}: {_files(len(loose))} directly in the folder, in no class folder (first: "
            f"{_item_name(Path(loose[0].name))}); they are not used: move each into its class's folder",
            file=sys.stderr,
        )
    files, labels, classes = [], [], []
    for class_dir in class_dirs:
        images = _walk_images(class_dir, walked, root)
        if not images:
            raise UserError(
                f"{_item_name(class_dir)}: class folder has no image files "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}); add images or remove the folder"
            )
        classes.append(class_dir.name)
        files += images
        labels += [len(classes) - 1] * len(images)
    inspected, pillow_said = _inspect_all(files)
    notes, kept_files, kept_labels, sides = [], [], [], []
    for file, label, (problem, side) in zip(files, labels, inspected):
        if problem:
            notes.append(f"skipped {_item_name(file)}: {problem}")
        else:
            kept_files.append(file)
            kept_labels.append(label)
            sides.append(side)
    for note in walked + notes + pillow_said:
        print(f"warning: {note}", file=sys.stderr)
    if notes:
        print(
            f"warning: {len(notes)} of {len(files)} image files skipped; the other "
            f"{len(files) - len(notes)} are used",
            file=sys.stderr,
        )
    if len(classes) >= 2 and len(notes) == len(files):
        raise UserError(f"{path}: none of the {len(files)} images could be decoded; check the files")
    dataset = Dataset(
        root=str(root.resolve()),
        task="image-classification",
        modality=IMAGE,
        items=[_item_name(f.relative_to(root)) for f in kept_files],
        labels=kept_labels,
        classes=classes,
        encode=lambda indices, preprocessing: encode_files([kept_files[i] for i in indices], preprocessing),
        prepare=prepare,
        notes=walked + notes,
        input_size=sorted(sides)[len(sides) // 2] if sides else None,
    )
    from autotransfer.data import check_labels

    check_labels(dataset, str(path))
    return dataset


def load_unlabeled(paths, config=None):
    """Files or folders (flat or nested) of images, for prediction or an unlabelled target domain.

    An input that cannot be read (a missing path, a damaged or non-image file, a looping link, a
    folder without images) is skipped, not fatal: each is named in one warning on stderr and listed in
    the dataset's ``notes`` (``skipped NAME: why``), so ``predict`` predicts the others and says what it
    left out. Only when nothing readable is left is it an error."""
    from autotransfer.data import Dataset

    files, skipped = [], []
    for ref in paths:
        p = Path(ref)
        if p.is_dir():
            images = _walk_images(p, skipped)
            if not images:
                _skip(skipped, p, f"no image files in this folder ({', '.join(sorted(IMAGE_SUFFIXES))})")
            files += images
        elif os.path.lexists(p):  # a file, or a link that may lead nowhere: the check below says why
            files.append(p)
        else:
            _skip(skipped, p, "no such file or folder")
    inspected, pillow_said = _inspect_all(files)
    for file, (problem, _) in zip(files, inspected):
        if problem:
            _skip(skipped, file, f"{problem}; remove or replace it")
    files = [f for f, (problem, _) in zip(files, inspected) if not problem]
    for note in skipped + pillow_said:
        print(f"warning: {note}", file=sys.stderr)
    if not files:
        named = ", ".join(map(str, paths))
        raise UserError(
            f"{named}: no readable image files"
            + (f" ({len(skipped)} inputs skipped, each named above)" if skipped else "")
            + "; give image files or folders of them"
        )
    return Dataset(
        root="",
        task="image-classification",
        modality=IMAGE,
        items=[_item_name(f) for f in files],
        labels=None,
        classes=[],
        encode=lambda indices, preprocessing: encode_files([files[i] for i in indices], preprocessing),
        prepare=prepare,
        notes=skipped,
    )


def _decode(path: Path, size: int, interpolation: str):
    import numpy as np
    from PIL import Image

    resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}.get(
        interpolation, Image.BICUBIC
    )
    with Image.open(path) as image:
        image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when the file is much larger
        image = to_rgb(image).resize((size, size), resample)
        return np.asarray(image, dtype=np.uint8)


def to_rgb(image):
    """Any mode as 8-bit RGB: upright per EXIF, 16-bit and float grey scaled (not clipped),
    transparency laid over white (not the black that hides under transparent pixels)."""
    import numpy as np
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image, dtype=np.float32)
        top = 65535.0 if values.max(initial=0) > 255 else 255.0
        image = Image.fromarray((values.clip(0, top) * (255.0 / top)).round().astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("RGB")


def encode_files(files, preprocessing):
    """Decode and resize every file once: a uint8 tensor (N, 3, S, S)."""
    import numpy as np
    import torch

    size = int(preprocessing["image_size"])
    interpolation = preprocessing.get("interpolation", "bicubic")
    with warnings.catch_warnings():  # Pillow's warnings were said, file by file, when the data loaded
        warnings.simplefilter("ignore")
        with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
            arrays = list(pool.map(lambda f: _decode(f, size, interpolation), files))
    stacked = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)
    return torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous()


def prepare(batch, preprocessing, train=False, augment="off"):
    """uint8 batch on the device -> normalised float, augmented on tensors when training."""
    import torch

    x = batch.float().div_(255)
    if train and augment != "off":
        x = augment_batch(x, strong=augment == "strong")
    mean = torch.tensor(preprocessing["mean"], device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(preprocessing["std"], device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def augment_batch(x, strong: bool):
    """Random shifts and scale (and, when strong, colour jitter), batched on the device. No flips:
    they change the meaning of digits and text in images."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    scale = 1 + (torch.rand(n, device=x.device) - 0.5) * (0.3 if strong else 0.1)
    shift = (torch.rand(n, 2, device=x.device) - 0.5) * (0.3 if strong else 0.15)
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    if strong:
        brightness = 1 + (torch.rand(n, 1, 1, 1, device=x.device) - 0.5) * 0.4
        contrast = 1 + (torch.rand(n, 1, 1, 1, device=x.device) - 0.5) * 0.4
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean) * brightness
        x = x.clamp(0, 1)
    return x


@hookimpl
def register_tasks(register):
    register(
        TaskSpec(
            name="image-classification",
            modality=IMAGE,
            description="a folder per class of image files (png, jpg, ...), any size, grey or colour",
            detect=detect,
            load=load,
            load_unlabeled=load_unlabeled,
            layouts=("DATA/CLASS_NAME/IMAGE_FILE",),
            augmentations=("off", "light", "strong"),
            size_key="image_size",
            input_sizes=input_sizes,
        )
    )
