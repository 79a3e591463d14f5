"""``curate train``, ``curate eval``, ``curate compare`` and ``curate text-head``: the bundled
validation trainer."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer

from curate.cli import app

# --help panels: options grouped by the objectives they apply to
P_RUN = "Run"
P_MODEL = "Model and pretrained towers"
P_OPT = "Optimisation"
P_SL = "Supervised classifier (sl, sl-subsample)"
P_SUB = "Subsampled softmax (sl-subsample, sl-frozen-text-subsample)"
P_FROZEN = "Frozen text head (sl-frozen-text, sl-frozen-text-subsample)"
P_CLIP = "CLIP (clip)"
P_EVAL = "Evaluation"

# kept in step with curate.objectives.OBJECTIVES by tests/test_train.py (importing torch here
# would slow every curate command)
OBJECTIVE_HELP = (
    "clip: contrastive image-text, scored zero-shot. "
    "sl: image tower + classifier (--classifier). "
    "sl-subsample: each softmax covers the batch's classes plus others drawn at random (the study's fix). "
    "sl-frozen-text: cosine classifier frozen to text embeddings of the class names (--head). "
    "sl-frozen-text-subsample: both. (default: clip)"
)


@app.command("train")
def train_command(
    manifest: Path = typer.Argument(..., help="A manifest folder (manifests/NAME) whose tensor shards exist (`curate shards`)."),
    objective: str | None = typer.Option(None, "--objective", help=OBJECTIVE_HELP, rich_help_panel=P_RUN),
    preset: str | None = typer.Option(
        None, "--preset", rich_help_panel=P_RUN,
        help="Named settings; options given explicitly win. paper-sl: the study's supervised recipe (SGD momentum 0.9, "
        "lr 0.1 x batch/256, wd 1e-4, cosine to 0 without warmup, 90 epochs of 256, cosine classifier, a+cname prompts).",
    ),
    model: str | None = typer.Option(
        None, "--model", rich_help_panel=P_MODEL,
        help="tiny (32 px ViT, trains on a CPU in minutes) | ViT-S-32 | ViT-B-32 | RN50. (default: tiny)",
    ),
    pretrained: Path | None = typer.Option(
        None, "--pretrained", rich_help_panel=P_MODEL,
        help="Tower weights: an open_clip checkpoint file (same --model) or a curate run (clip: both towers; sl: image).",
    ),
    image_tower: str | None = typer.Option(
        None, "--image-tower", rich_help_panel=P_MODEL, help="scratch | init (from --pretrained). (default: scratch)"
    ),
    image_size: int | None = typer.Option(None, "--image-size", rich_help_panel=P_MODEL, help="Model input size in pixels; shards are resized on the device. (default: the model's)"),
    epochs: int | None = typer.Option(None, "--epochs", rich_help_panel=P_OPT, help="Passes over the train split. (default: 10)"),
    steps: int | None = typer.Option(None, "--steps", rich_help_panel=P_OPT, help="Train exactly this many optimiser steps instead of --epochs."),
    batch_size: int | None = typer.Option(None, "--batch-size", rich_help_panel=P_OPT, help="Images per step (capped at the train split's size). (default: 128)"),
    optimizer: str | None = typer.Option(None, "--optimizer", rich_help_panel=P_OPT, help="adamw (open_clip's CLIP recipe) | sgd (momentum; the study's supervised recipe). (default: adamw)"),
    lr: float | None = typer.Option(None, "--lr", rich_help_panel=P_OPT, help="Peak learning rate. (default: 1e-3)"),
    momentum: float | None = typer.Option(None, "--momentum", rich_help_panel=P_OPT, help="SGD momentum. (default: 0.9)"),
    schedule: str | None = typer.Option(None, "--schedule", rich_help_panel=P_OPT, help="cosine (decay to 0 after warmup) | constant. (default: cosine)"),
    warmup: int | None = typer.Option(None, "--warmup", rich_help_panel=P_OPT, help="Linear warmup steps. (default: 5% of all steps)"),
    weight_decay: float | None = typer.Option(None, "--weight-decay", rich_help_panel=P_OPT, help="adamw: decoupled, not on gains, biases, temperature; sgd: on every weight. (default: 0.1)"),
    precision: str | None = typer.Option(None, "--precision", rich_help_panel=P_OPT, help="fp32 | bf16 (autocast; meant for GPUs). (default: fp32)"),
    device: str | None = typer.Option(None, "--device", rich_help_panel=P_OPT, help="auto (CUDA if present, else CPU) | cpu | cuda. (default: auto)"),
    compile_model: bool | None = typer.Option(None, "--compile/--no-compile", rich_help_panel=P_OPT, help="Run the model through torch.compile. (default: off)"),
    seed: int | None = typer.Option(None, "--seed", rich_help_panel=P_OPT, help="Seeds weights, batch order, augmentation and class subsets. (default: 0)"),
    classifier: str | None = typer.Option(
        None, "--classifier", rich_help_panel=P_SL,
        help="linear | cosine (prototypes, learnt temperature capped at 100: the study's). (default: linear)",
    ),
    subsample_classes: int | None = typer.Option(
        None, "--subsample-classes", rich_help_panel=P_SUB, help="Classes in each softmax, the batch's always included. (default: 50, the study's)"
    ),
    subsample_weights: str | None = typer.Option(
        None, "--subsample-weights", rich_help_panel=P_SUB,
        help="How the other classes are drawn: uniform | linear (in training frequency) | sqrt (its square root). (default: uniform)",
    ),
    head: Path | None = typer.Option(
        None, "--head", rich_help_panel=P_FROZEN,
        help="Class embeddings: a head file (`curate text-head`) or a clip run. (default: --pretrained's text tower, else this run's untrained one)",
    ),
    text_tower: str | None = typer.Option(
        None, "--text-tower", rich_help_panel=P_CLIP,
        help="scratch | init (from --pretrained, then trained) | frozen (from --pretrained, never updated). (default: scratch)",
    ),
    prompts: str | None = typer.Option(
        None, "--prompts", rich_help_panel=P_EVAL,
        help="Prompt set for class names (zero-shot scoring, frozen heads): simple (2) | cname | a+cname | photo | openai80. (default: simple)",
    ),
    no_eval: bool = typer.Option(False, "--no-eval", rich_help_panel=P_EVAL, help="Skip the evaluation on the held-out split that follows training."),
    log_every: int | None = typer.Option(None, "--log-every", rich_help_panel=P_RUN, help="Steps between lines of train_log.jsonl. (default: 10)"),
    save_every: int | None = typer.Option(None, "--save-every", rich_help_panel=P_RUN, help="Also checkpoint every N steps (always at each epoch end and on Ctrl-C)."),
    checkpoint_epochs: int | None = typer.Option(
        None, "--checkpoint-epochs", rich_help_panel=P_RUN, help="Checkpoint every N epoch ends (always after the last step). (default: 1)"
    ),
    out: Path | None = typer.Option(None, "--out", "-o", rich_help_panel=P_RUN, help="Run folder. (default: runs/MANIFEST-OBJECTIVE-MODEL)"),
    resume: bool = typer.Option(False, "--resume", rich_help_panel=P_RUN, help="Continue the run in --out from its checkpoint (its saved options apply; --epochs/--steps may extend it)."),
) -> None:
    """Train a CLIP or supervised model on a manifest's shards, then evaluate it on the held-out split.

    Rows without a class (label -1, built with --keep-unmatched) are image-text pairs: clip trains on them; the supervised objectives skip them and count them (run.json unlabelled_skipped).
    """  # noqa: E501 - one line per paragraph: rich keeps line breaks inside a paragraph
    from curate.errors import CurateError

    if not manifest.is_dir():  # said before torch is imported (seconds)
        raise CurateError(f"{manifest}: no such manifest folder (curate build writes one, curate shards its tensor shards)")
    from curate.runs import TrainConfig, apply_preset
    from curate.train import train
    from curate.ui import info

    given = {
        "objective": objective,
        "model": model,
        "epochs": epochs,
        "steps": steps,
        "batch_size": batch_size,
        "optimizer": optimizer,
        "lr": lr,
        "momentum": momentum,
        "schedule": schedule,
        "warmup": warmup,
        "weight_decay": weight_decay,
        "precision": precision,
        "device": device,
        "compile": compile_model,
        "seed": seed,
        "image_size": image_size,
        "classifier": classifier,
        "subsample_classes": subsample_classes,
        "subsample_weights": subsample_weights,
        "pretrained": str(pretrained) if pretrained is not None else None,
        "image_tower": image_tower,
        "text_tower": text_tower,
        "head": str(head) if head is not None else None,
        "prompts": prompts,
        "log_every": log_every,
        "save_every": save_every,
        "checkpoint_epochs": checkpoint_epochs,
    }
    if preset is not None:
        given = apply_preset(preset, given)
    cfg = dataclasses.replace(TrainConfig(), **{k: v for k, v in given.items() if v is not None})
    if steps is not None:
        cfg = dataclasses.replace(cfg, epochs=None)
    if resume and epochs is None and steps is None:
        cfg = _saved_length(out)
    result = train(manifest, cfg, out=out, resume=resume)
    if not no_eval:
        from curate.evaluate import evaluate_run

        _print_key_numbers(evaluate_run(result.run_dir, device=cfg.device))
    info(f"run folder: {result.run_dir}")
    typer.echo(str(result.run_dir))


def _saved_length(out: Path | None) -> object:
    """On a bare ``--resume`` the saved run's epochs/steps apply (finishing what it started)."""
    from curate.errors import CurateError
    from curate.runs import TrainConfig, read_run

    if out is None:
        raise CurateError("--resume needs --out RUN (the run folder to continue)")
    return TrainConfig.from_dict(read_run(out)["config"])


def _print_key_numbers(m: dict) -> None:
    from curate.ui import info

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:+.3f}"

    info(
        f"{m['run']} on {m.get('dataset', 'heldout')}: top-1 {pct(m['top1'])} (chance {pct(m['chance_top1'])}), top-5 {pct(m['top5'])}; "
        f"head/medium/tail {pct(m['head_accuracy'])}/{pct(m['medium_accuracy'])}/{pct(m['tail_accuracy'])}; "
        f"pearson {num(m['pearson_log_freq'])}, spearman {num(m['spearman_log_freq'])}; "
        f"prediction entropy/logK {num(m['prediction_entropy_norm'])}"
    )
    for reason, n in (m.get("skipped") or {}).items():
        info(f"skipped {n} {reason}")


@app.command("eval")
def eval_command(
    run: Path = typer.Argument(..., help="A run folder written by `curate train` (runs/NAME)."),
    dataset: str = typer.Option(
        "heldout", "--dataset",
        help="heldout (the manifest's balanced eval split) | imagefolder:DIR (one sub-folder per class named by wnid, "
        "as ImageNet val / ImageNet-V2).",
    ),
    classes: str | None = typer.Option(
        None, "--classes", help="Score only this vocabulary's classes (e.g. imagenet100: ImageNet-100 from a 1000-class model)."
    ),
    prompts: str | None = typer.Option(
        None, "--prompts", help="clip runs, zero-shot: simple | cname | a+cname | photo | openai80. (default: the run's)"
    ),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present, else CPU) | cpu | cuda."),
    batch_size: int = typer.Option(256, "--batch-size", help="Eval images per forward pass."),
    workers: int = typer.Option(0, "--workers", help="imagefolder: processes decoding images."),
    as_json: bool = typer.Option(False, "--json", help="Print this dataset's metrics to stdout instead of the key numbers."),
) -> None:
    """Score a run on an evaluation set; metrics.json keeps each set under its name (held-out also writes report.md and plots)."""
    from curate.errors import CurateError

    if not (run / "run.json").is_file():  # said before torch is imported (seconds)
        raise CurateError(f"{run}: not a training run (no run.json)")
    from curate.evaluate import evaluate_run

    metrics = evaluate_run(run, dataset=dataset, classes=classes, prompts=prompts, device=device, batch_size=batch_size, workers=workers)
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
        return
    _print_key_numbers(metrics)
    typer.echo(str(Path(run) / "metrics.json"))


@app.command("compare")
def compare_command(
    runs: list[Path] = typer.Argument(..., help="Run folders, each already evaluated (metrics.json)."),
    tsv: bool = typer.Option(False, "--tsv", help="Print tab-separated values (raw numbers) instead of a table."),
) -> None:
    """One table of several runs side by side, a row per run and evaluation set: accuracy, head/medium/tail, correlations, throughput."""
    from rich.console import Console

    from curate.evaluate import compare_runs, compare_table, compare_tsv
    from curate.ui import console

    rows = compare_runs(runs)
    if tsv:
        typer.echo(compare_tsv(rows), nl=False)
        return
    # piped output has no terminal width; 80 columns would squeeze fifteen columns into ellipses
    out = console if console.is_terminal else Console(width=220)
    out.print(compare_table(rows))


@app.command("text-head")
def text_head_command(
    pretrained: Path = typer.Argument(..., help="The text tower: an open_clip checkpoint file or a curate clip run."),
    vocab: str = typer.Option(..., "--vocab", help="The classes, in order: imagenet1k, imagenet100, demo, a csv/tsv/json file (`curate vocab`)."),
    model: str = typer.Option("tiny", "--model", help="The checkpoint's architecture: tiny | ViT-S-32 | ViT-B-32 | RN50."),
    prompts: str = typer.Option("a+cname", "--prompts", help="simple | cname | a+cname (the study's heads) | photo | openai80."),
    out: Path = typer.Option(..., "--out", "-o", help="The head file to write (.pt), for `curate train --head`."),
) -> None:
    """Dump a frozen classifier head: text embeddings of a vocabulary's class names under a prompt set."""
    from curate.models import prompt_set
    from curate.pretrained import save_head, text_head
    from curate.ui import info
    from curate.vocab import load_vocab

    table = load_vocab(vocab)
    head = text_head(pretrained, model=model, class_names=table["name"].to_list(), wnids=table["wnid"].to_list(),
                     prompts=prompt_set(prompts))
    save_head(out, head)
    info(f"{len(table)} classes x {head['embeddings'].shape[1]} dimensions ({prompts} prompts) from {pretrained}")
    typer.echo(str(out))
