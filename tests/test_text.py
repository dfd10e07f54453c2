"""Text transfer on real data: BBC News exported as a CSV, MiniLM from its PyPI package, offline.

Small on purpose (12 documents per topic, 32 tokens, one epoch of fine-tuning) so the file runs in
a few minutes on a CPU; the numbers it asserts still separate working from broken.
"""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import pytest
import torch
from conftest import cli, read_json

os.environ["HF_HUB_OFFLINE"] = "1"

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
QUICK = ["--backbones", "all-MiniLM-L6-v2", "--max-length", "32", "--no-rank", "--quiet"]


@pytest.fixture(scope="session")
def bbc(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "bbc.csv"
    cli("demo", "bbc", path, "--per-class", "12")
    return path


@pytest.fixture(scope="session")
def bbc_search(bbc, tmp_path_factory) -> Path:
    """One search over four strategies, one trial each, pinned by enqueueing so each surely runs."""
    from autotransfer.config import SearchConfig
    from autotransfer.engine.run import Search
    from autotransfer.plugins import reset_host

    out = tmp_path_factory.mktemp("search") / "out"
    config = SearchConfig(
        data=str(bbc),
        output=str(out),
        n_trials=4,
        max_epochs=2,
        backbones=["all-MiniLM-L6-v2"],
        strategies=["linear-probe", "lora", "bitfit", "partial-finetune"],
        max_length=24,
        device="cpu",
        reference=False,
        rank=False,
        pruning=False,
        quiet=True,
    )
    search = Search.open(config)
    search.study.study.enqueue_trial(
        {"strategy": "linear-probe", "linear-probe.lr": 0.03, "epochs": 2, "batch_size": 16}
    )
    for strategy in ("lora", "bitfit", "partial-finetune"):
        search.study.study.enqueue_trial(
            {"strategy": strategy, f"{strategy}.lr": 1e-3, "epochs": 1, "batch_size": 16}
        )
    search.run()
    reset_host()
    return out


def test_search_finishes_trials_over_strategies_including_lora(bbc_search):
    study = optuna.load_study(study_name="autotransfer", storage=f"sqlite:///{bbc_search / 'study.db'}")
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == 4, [
        (t.params.get("strategy"), t.user_attrs.get("fail_reason")) for t in study.trials
    ]
    assert {t.params["strategy"] for t in finished} == {"linear-probe", "lora", "bitfit", "partial-finetune"}
    assert {t.params["backbone"] for t in finished} == {MINILM}
    lora = next(t for t in finished if t.params["strategy"] == "lora")
    assert {"lora.r", "lora.alpha_ratio", "lora.dropout", "lora.targets"} <= set(lora.params)
    best = read_json(bbc_search / "best.json")
    assert best["val_metric"] >= 0.6  # five topics: chance is 0.2
    assert read_json(bbc_search / "model" / "config.json")["preprocessing"]["max_length"] == 24


def test_predict_round_trips_the_test_accuracy(bbc, bbc_search):
    """predict on the CSV gives, on the held-out rows, exactly the test accuracy the search recorded."""
    import csv

    result = cli("predict", bbc_search / "model", bbc)
    lines = result.output.strip().splitlines()
    rows = list(csv.DictReader(bbc.open(encoding="utf-8")))
    assert len(lines) == len(rows)
    predicted = {line.split("\t")[0].rpartition(":")[2]: line.split("\t")[1] for line in lines}
    test_rows = [item.rpartition(":")[2] for item in read_json(bbc_search / "split.json")["test"]]
    accuracy = sum(predicted[r] == rows[int(r) - 1]["label"] for r in test_rows) / len(test_rows)
    assert accuracy == pytest.approx(read_json(bbc_search / "best.json")["test_metric"])
    # .txt files and a folder of them read the same way
    folder = bbc.parent / "unlabelled"
    folder.mkdir(exist_ok=True)
    for r in test_rows[:3]:
        (folder / f"doc{r}.txt").write_text(rows[int(r) - 1]["text"], encoding="utf-8")
    by_file = cli("predict", bbc_search / "model", folder / f"doc{test_rows[0]}.txt").output.split("\t")
    assert by_file[1] == predicted[test_rows[0]]
    by_folder = cli("predict", bbc_search / "model", folder).output.strip().splitlines()
    assert sorted(line.split("\t")[1] for line in by_folder) == sorted(predicted[r] for r in test_rows[:3])


def test_pretrained_linear_probe_beats_random_weights(bbc, tmp_path):
    args = ["--strategies", "linear-probe", "--n-trials", "1", "--max-epochs", "8", "--no-reference", *QUICK]
    cli("search", bbc, "-o", tmp_path / "pre", *args)
    cli("search", bbc, "-o", tmp_path / "rand", "--random-init", *args)
    pretrained, random = read_json(tmp_path / "pre" / "best.json"), read_json(tmp_path / "rand" / "best.json")
    assert pretrained["params"] == random["params"]
    assert (
        pretrained["val_metric"] + pretrained["test_metric"]
        > random["val_metric"] + random["test_metric"] + 0.4
    )


# the backbone surface ------------------------------------------------------------------------------
def test_minilm_layer_groups_and_pooling():
    from autotransfer.plugins import default_host

    host = default_host()
    mean = host.backbone("all-MiniLM-L6-v2").build(pretrained=True)
    cls = host.backbone("all-MiniLM-L6-v2:cls").build(pretrained=True)
    assert len(mean.layer_groups) == 7 and len(cls.layer_groups) == 8  # embeddings, 6 layers (, pooler)
    assert all(n.startswith("body.embeddings.") for n in mean.layer_groups[0])
    assert all(".layer.5." in n for n in mean.layer_groups[6])
    assert all(n.startswith("body.pooler.") for n in cls.layer_groups[7])
    assert not mean.ungrouped_parameters() and not cls.ungrouped_parameters()
    assert mean.preprocessing["tokenizer"] and mean.preprocessing["max_length"] == 256
    from autotransfer_text import tokenize

    x = tokenize(["the match ended in a draw", "shares fell"], {**mean.preprocessing, "max_length": 8})
    assert x["input_ids"].shape == (2, 8)  # the first text is truncated, the second padded
    with torch.no_grad():
        a, b = mean.eval().forward_features(x), cls.eval().forward_features(x)
    assert a.shape == b.shape == (2, 384) and not torch.allclose(a, b)
    # padding does not change a mean-pooled text
    short = tokenize(["shares fell"], mean.preprocessing)
    with torch.no_grad():
        torch.testing.assert_close(mean.forward_features(short)[0], a[1], atol=1e-4, rtol=1e-4)


def test_random_init_builds_the_same_architecture():
    from autotransfer.plugins import default_host

    spec = default_host().backbone(MINILM)
    pre, rand = spec.build(pretrained=True).state_dict(), spec.build(pretrained=False).state_dict()
    assert pre.keys() == rand.keys()
    assert not torch.equal(
        pre["body.encoder.layer.0.attention.self.query.weight"],
        rand["body.encoder.layer.0.attention.self.query.weight"],
    )


def test_a_local_transformers_folder_is_a_backbone(tmp_path):
    from transformers import AutoModel

    from autotransfer.plugins import default_host
    from autotransfer_hf import _minilm_path

    folder = tmp_path / "my-encoder"
    AutoModel.from_pretrained(_minilm_path()).save_pretrained(folder)
    spec = default_host().backbone(f"{folder}:cls")
    assert spec.modality == "text" and spec.feature_dim == 384
    assert len(spec.build(pretrained=True).layer_groups) == 8


# the strategies ------------------------------------------------------------------------------------
def _model(name: str = "all-MiniLM-L6-v2"):
    from autotransfer.backbone import TransferModel
    from autotransfer.plugins import default_host

    torch.manual_seed(0)
    return TransferModel(default_host().backbone(name).build(pretrained=True), 3)


def _context(model):
    from autotransfer.strategy import StrategyContext

    return StrategyContext(
        backbone_name="x", modality="text", n_groups=len(model.backbone.layer_groups), max_epochs=1
    )


def test_lora_trains_adapters_and_exports_a_plain_model():
    from autotransfer.backbone import TransferModel
    from autotransfer.plugins import default_host
    from autotransfer_peft import adaptable_modules, prepare_lora
    from autotransfer_text import tokenize

    model = _model()
    modules = adaptable_modules(model.backbone.body)
    attention = [n for n, kind in modules.items() if kind == "attention"]
    assert len(attention) == 6 * 4 and len(modules) == 6 * 6  # q, k, v, out; and the two MLP layers
    plain_keys = set(model.state_dict())
    plan = prepare_lora(model, {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "attention"}, _context(model))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or n.startswith("head.") for n in trainable)
    assert any(".value." in n for n in trainable) and not any(".intermediate." in n for n in trainable)
    assert not model.backbone.ungrouped_parameters()  # adapters sit in their layer's group
    assert plan.frozen_prefix == 1  # embeddings have no linear layer to adapt
    x = tokenize(["the bank raised rates", "the team won"], model.backbone.preprocessing)
    optimiser = torch.optim.AdamW([p for g in plan.param_groups for p in g["params"]], lr=1e-2)
    model.train()
    for _ in range(2):
        loss = model(x).logsumexp(1).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        adapted = model(x)
    exported = plan.export(model)
    assert set(exported.state_dict()) == plain_keys
    fresh = TransferModel(default_host().backbone(MINILM).build(pretrained=False), 3)
    fresh.load_state_dict(exported.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), adapted, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(
            fresh.backbone(x), _model().backbone.eval()(x)
        )  # the adapters changed features


def test_lora_fits_a_timm_cnn():
    """EfficientNet-Lite has no attention: LoRA adapts its 1x1 convolutions, and merges back."""
    from autotransfer_peft import prepare_lora

    model = _model("tf_efficientnet_lite0")
    keys = set(model.state_dict())
    plan = prepare_lora(model, {"r": 4, "alpha": 4, "dropout": 0.0, "targets": "attention"}, _context(model))
    assert plan.notes["lora_targets"] > 10
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        before = model(x)
    assert set(plan.export(model).state_dict()) == keys
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, atol=1e-4, rtol=1e-4)


def test_bitfit_trains_biases_and_the_head_only():
    from autotransfer_peft import prepare_bitfit

    model = _model()
    plan = prepare_bitfit(model, {"head_lr_mult": 10.0}, _context(model))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith("bias") or n.startswith("head.") for n in trainable)
    assert any(n.startswith("backbone.") for n in trainable)
    in_optimiser = {id(p) for g in plan.param_groups for p in g["params"]}
    assert in_optimiser == {id(p) for p in model.parameters() if p.requires_grad}
    assert plan.param_groups[0]["name"] == "head" and plan.param_groups[0]["lr_scale"] == 10.0


# reading text data ---------------------------------------------------------------------------------
def _load(path, **options):
    from autotransfer.config import SearchConfig
    from autotransfer_text import load

    return load(str(path), SearchConfig(data=str(path), **options))


def test_tsv_jsonl_and_folders_read_alike(tmp_path):
    import json

    rows = [("the striker scored twice", "sport"), ("rates rose again", "money")] * 3
    (tmp_path / "a.tsv").write_text(
        "label\treview\n" + "".join(f"{l}\t{t}\n" for t, l in rows), encoding="utf-8"
    )
    (tmp_path / "a.jsonl").write_text(
        "".join(json.dumps({"id": i, "text": t, "label": l}) + "\n" for i, (t, l) in enumerate(rows)),
        encoding="utf-8",
    )
    for i, (t, l) in enumerate(rows):
        (tmp_path / "folder" / l).mkdir(parents=True, exist_ok=True)
        (tmp_path / "folder" / l / f"{i}.txt").write_text(t, encoding="utf-8")
    (tmp_path / "odd.csv").write_text(
        "words,y2\n" + "".join(f"{t} {i},{l}\n" for i, (t, l) in enumerate(rows))
    )
    for path in ("a.tsv", "a.jsonl", "folder", "odd.csv"):
        dataset = _load(tmp_path / path)
        assert dataset.classes == ["money", "sport"] and len(dataset) == 6, path
        assert sorted(dataset.labels) == [0, 0, 0, 1, 1, 1]
    from autotransfer_text import detect

    assert detect(str(tmp_path / "folder")) and detect(str(tmp_path / "a.jsonl"))


def _error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


BAD = ["--n-trials", "1", "--max-epochs", "1", *QUICK]


@pytest.mark.parametrize(
    "content,needles",
    [
        (
            "text,label\nthe match,sport\n,sport\nrates,money\nshares,money\n",
            ["bad.csv", "empty text", "row 2"],
        ),
        (
            "body,kind,source\nthe match,sport,a\nrates,money,b\n",
            ["bad.csv", "columns found: body, kind, source", "--label-column"],
        ),
        ("text,label\n", ["bad.csv", "no rows", "text, label"]),
        (
            "text,label\nthe match,sport\nthe final,sport\nrates,money\n",
            ["bad.csv", "'money'", "single example"],
        ),
        (
            "text,label\nthe match,sport\nthe final,\nrates,money\nshares,money\n",
            ["bad.csv", "empty label", "row 2"],
        ),
    ],
)
def test_bad_text_data_is_a_one_line_error_and_writes_nothing(tmp_path, content, needles):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    _error(cli("search", path, "-o", tmp_path / "out", *BAD, expect=None), *needles)
    assert not (tmp_path / "out").exists()


def test_named_columns_must_exist(tmp_path, bbc):
    error = _error(
        cli("search", bbc, "-o", tmp_path / "out", "--label-column", "topic", *BAD, expect=None),
        "'topic'",
        "columns found: text, label",
    )
    assert "--label-column" in error
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_utf8_says_how_to_give_its_encoding(tmp_path):
    path = tmp_path / "latin.csv"
    rows = "text,label\n" + "".join(f"café au lait {i},{'a' if i % 2 else 'b'}\n" for i in range(8))
    path.write_bytes(rows.encode("latin-1"))
    _error(
        cli("search", path, "-o", tmp_path / "out", "--task", "text-classification", *BAD, expect=None),
        "latin.csv",
        "UTF-8",
        "--encoding",
    )
    assert not (tmp_path / "out").exists()
    dataset = _load(path, encoding="latin-1")
    assert len(dataset) == 8 and dataset.classes == ["a", "b"]


def test_text_data_takes_only_text_backbones(tmp_path, bbc, digits):
    _error(
        cli(
            "search",
            bbc,
            "-o",
            tmp_path / "a",
            "--backbones",
            "tf_efficientnet_lite0",
            "--n-trials",
            "1",
            expect=None,
        ),
        "tf_efficientnet_lite0",
        "text",
        MINILM,
    )
    _error(
        cli(
            "search",
            digits,
            "-o",
            tmp_path / "b",
            "--backbones",
            "all-MiniLM-L6-v2",
            "--n-trials",
            "1",
            expect=None,
        ),
        "image",
    )
    from autotransfer.config import SearchConfig
    from autotransfer.engine.candidates import pick_backbones
    from autotransfer.plugins import default_host

    defaults = pick_backbones(default_host(), SearchConfig(data=str(bbc)), "text")
    assert {s.name for s in defaults} == {MINILM, f"{MINILM}:cls"}
