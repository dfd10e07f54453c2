"""Does torch.compile pay inside a trial? Compile time against the step time it saves.

A trial builds a fresh model, so every trial would pay the compile again (the cache of compiled
graphs helps only for identical models and shapes). Measured: eager and compiled training steps of
the backbone at the search's image size, the one-off compile time, and the number of steps after
which compiling has paid for itself, beside the steps a typical trial runs.

    python benchmarks/compile.py --image-size 64 --batch 32
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import machine, machine_md, write  # noqa: E402

BACKBONE = "tf_efficientnet_lite0"


class Features(torch.nn.Module):
    """The pooled features, as a trial trains them."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x):
        return self.backbone.forward_features(x)


def step_times(model, head, x, y, steps: int, device) -> tuple[float, float]:
    """(seconds of the first step, mean seconds of the next ``steps``)."""
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=1e-4)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )

    def one():
        with autocast:
            loss = torch.nn.functional.cross_entropy(head(model(x)).float(), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    started = time.time()
    one()
    first = time.time() - started
    one()  # recompilations and allocator warm-up settle
    started = time.time()
    for _ in range(steps):
        one()
    return first, (time.time() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--trial-steps",
        type=int,
        default=60,
        help="steps of a typical trial (the demo: 1300 images / batch 32 x 3 epochs is about 120)",
    )
    args = parser.parse_args()
    from autotransfer.plugins import default_host

    spec = default_host().backbone(BACKBONE)  # the product's public surface: a registered backbone
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    rows = {}
    for mode in ("eager", "compiled"):
        torch.manual_seed(0)
        backbone = spec.build(pretrained=True)

        model = Features(backbone)
        head = torch.nn.Linear(backbone.feature_dim, 10)
        model.to(device), head.to(device)
        if mode == "compiled":
            model = torch.compile(model)
        first, step = step_times(model, head, x, y, args.steps, device)
        rows[mode] = {"first_step_s": round(first, 3), "step_s": round(step, 4)}
    saved = rows["eager"]["step_s"] - rows["compiled"]["step_s"]
    extra = rows["compiled"]["first_step_s"] - rows["eager"]["first_step_s"]
    break_even = extra / saved if saved > 0 else None
    trial = {
        mode: round(r["first_step_s"] + r["step_s"] * (args.trial_steps - 1), 2) for mode, r in rows.items()
    }
    info = machine()
    payload = {
        "args": vars(args),
        "machine": info,
        "modes": rows,
        "break_even_steps": break_even,
        "trial_seconds": trial,
    }
    kind = "GPU" if device.type == "cuda" else "CPU"
    lines = [
        f"# torch.compile inside a trial ({kind})",
        "",
        f"`python benchmarks/compile.py --image-size {args.image_size} --batch {args.batch} --steps "
        f"{args.steps} "
        f"--trial-steps {args.trial_steps}`",
        "",
        "Machine:",
        machine_md(info),
        "",
        f"{BACKBONE}, batch {args.batch}, {args.image_size} px, full fine-tune steps (forward, "
        "backward, AdamW).",
        "",
        "| mode | first step (s, includes compiling) | step after (s) |",
        "| --- | --- | --- |",
    ]
    for mode, r in rows.items():
        lines.append(f"| {mode} | {r['first_step_s']} | {r['step_s']} |")
    lines += [
        "",
        f"Compiling costs {extra:.1f} s once per trial and saves {saved * 1000:.1f} ms a step: "
        + (f"it pays after {break_even:.0f} steps." if break_even else "it never pays (no step is faster)."),
        f"A trial of {args.trial_steps} steps: eager {trial['eager']} s, compiled {trial['compiled']} s.",
        "",
    ]
    write(f"compile-{kind.lower()}", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
