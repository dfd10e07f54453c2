"""Memory layout of a CPU trial's convolutions: EfficientNet-Lite forward (and forward + backward)
milliseconds per image in the usual (contiguous) layout against channels-last, at the searched sizes
and at the pass sizes a CPU trial uses (``cpu_pass_size``). Writes benchmarks/results/layout-cpu.md.

    python benchmarks/layout.py [--out benchmarks/results/layout-cpu.md]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path


def per_image_ms(model, x, train: bool, repeats: int = 3) -> float:
    import torch

    def once():
        if train:
            model(x).float().sum().backward()
        else:
            with torch.inference_mode():
                model(x)

    once()  # the first pass at a shape pays one-off costs
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        once()
        best = min(best, time.perf_counter() - started)
    return 1000 * best / x.shape[0]


def main() -> None:
    import timm
    import torch

    from autotransfer.backbone import place
    from autotransfer.training.memory import cpu_pass_size

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="benchmarks/results/layout-cpu.md")
    parser.add_argument("--backbones", default="tf_efficientnet_lite0,tf_efficientnet_lite2")
    args = parser.parse_args()
    rows = []
    for name in args.backbones.split(","):
        for size in (32, 64, 128, 224):
            passes = cpu_pass_size(3 * size * size, 256)
            for train in (False, True):
                model = timm.create_model(name, pretrained=False, num_classes=10).train(train)
                x = torch.randn(min(passes, 64) if train else passes, 3, size, size)
                usual = per_image_ms(model, x, train)
                last = per_image_ms(place(model, torch.device("cpu")), x, train)  # as trials run
                rows.append((name, size, "train" if train else "forward", x.shape[0], usual, last))
    lines = [
        "# Channels-last convolutions on a CPU",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}. `python benchmarks/layout.py`. Milliseconds per image (least of 3 passes).",
        "",
        "| backbone | size | pass | examples | contiguous ms | channels-last ms | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {n} | {s} | {k} | {b} | {u:.2f} | {c:.2f} | {u / c:.2f}x |" for n, s, k, b, u, c in rows]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
