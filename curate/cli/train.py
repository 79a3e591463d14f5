"""``curate train``, ``curate eval`` and ``curate compare``: the bundled validation trainer."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer

from curate.cli import app


@app.command("train")
def train_command(
    manifest: Path = typer.Argument(..., help="A manifest folder (manifests/NAME) whose tensor shards exist (`curate shards`)."),
    objective: str | None = typer.Option(
        None,
        "--objective",
        help="clip: contrastive image-text (zero-shot scored). sl: image tower + linear classifier. "
        "sl-subsample: each softmax covers the batch's classes plus random others (the study's fix). "
        "sl-frozen-text: classifier frozen to text embeddings of the class names. [default: clip]",
    ),
    model: str | None = typer.Option(
        None, "--model", help="tiny (32 px ViT, trains on a CPU in minutes) | ViT-S-32 | ViT-B-32 | RN50; all from scratch. [default: tiny]"
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="Passes over the train split. [default: 10]"),
    steps: int | None = typer.Option(None, "--steps", help="Train exactly this many optimiser steps instead of --epochs."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Images per step (capped at the train split's size). [default: 128]"),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate of AdamW. [default: 1e-3]"),
    schedule: str | None = typer.Option(None, "--schedule", help="cosine (decay to 0 after warmup) | constant. [default: cosine]"),
    warmup: int | None = typer.Option(None, "--warmup", help="Linear warmup steps. [default: 5% of all steps]"),
    weight_decay: float | None = typer.Option(None, "--weight-decay", help="AdamW decoupled weight decay (not on gains, biases, temperature). [default: 0.1]"),
    precision: str | None = typer.Option(None, "--precision", help="fp32 | bf16 (autocast; meant for GPUs). [default: fp32]"),
    device: str | None = typer.Option(None, "--device", help="auto (CUDA if present, else CPU) | cpu | cuda. [default: auto]"),
    compile_model: bool | None = typer.Option(None, "--compile/--no-compile", help="Run the model through torch.compile. [default: off]"),
    seed: int | None = typer.Option(None, "--seed", help="Seeds weights, batch order, augmentation and class subsets. [default: 0]"),
    image_size: int | None = typer.Option(None, "--image-size", help="Model input size in pixels; shards are resized on the device. [default: the model's]"),
    subsample_classes: int | None = typer.Option(
        None, "--subsample-classes", help="sl-subsample: classes in each softmax (the batch's always included). [default: a quarter of all]"
    ),
    text_from: Path | None = typer.Option(
        None, "--text-from", help="sl-frozen-text: a CLIP run whose text tower embeds the class names. [default: this run's untrained text tower]"
    ),
    templates: str | None = typer.Option(None, "--templates", help="Prompt templates for class names: simple (2) | openai (80). [default: simple]"),
    log_every: int | None = typer.Option(None, "--log-every", help="Steps between lines of train_log.jsonl. [default: 10]"),
    save_every: int | None = typer.Option(None, "--save-every", help="Also checkpoint every N steps (always at each epoch end and on Ctrl-C)."),
    checkpoint_epochs: int | None = typer.Option(
        None, "--checkpoint-epochs", help="Checkpoint every N epoch ends (always after the last step). [default: 1]"
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run folder. [default: runs/MANIFEST-OBJECTIVE-MODEL]"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its checkpoint (its saved options apply; --epochs/--steps may extend it)."),
    no_eval: bool = typer.Option(False, "--no-eval", help="Skip the evaluation that follows training."),
) -> None:
    """Train a CLIP or supervised model from scratch on a manifest's shards, then evaluate it."""
    from curate.train import TrainConfig, train
    from curate.ui import info

    given = {
        "objective": objective,
        "model": model,
        "epochs": epochs,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "schedule": schedule,
        "warmup": warmup,
        "weight_decay": weight_decay,
        "precision": precision,
        "device": device,
        "compile": compile_model,
        "seed": seed,
        "image_size": image_size,
        "subsample_classes": subsample_classes,
        "text_from": str(text_from) if text_from is not None else None,
        "templates": templates,
        "log_every": log_every,
        "save_every": save_every,
        "checkpoint_epochs": checkpoint_epochs,
    }
    cfg = dataclasses.replace(TrainConfig(), **{k: v for k, v in given.items() if v is not None})
    if steps is not None:
        cfg = dataclasses.replace(cfg, epochs=None)
    if resume and epochs is None and steps is None:
        cfg = _saved_length(out)
    result = train(manifest, cfg, out=out, resume=resume, evaluate=not no_eval)
    if result.metrics is not None:
        _print_key_numbers(result.metrics)
    info(f"run folder: {result.run_dir}")
    typer.echo(str(result.run_dir))


def _saved_length(out: Path | None) -> object:
    """On a bare ``--resume`` the saved run's epochs/steps apply (finishing what it started)."""
    from curate.errors import CurateError
    from curate.train import TrainConfig, read_run

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
        f"{m['run']}: top-1 {pct(m['top1'])} (chance {pct(m['chance_top1'])}), top-5 {pct(m['top5'])}; "
        f"head/medium/tail {pct(m['head_accuracy'])}/{pct(m['medium_accuracy'])}/{pct(m['tail_accuracy'])}; "
        f"pearson {num(m['pearson_log_freq'])}, spearman {num(m['spearman_log_freq'])}; "
        f"prediction entropy/logK {num(m['prediction_entropy_norm'])}"
    )


@app.command("eval")
def eval_command(
    run: Path = typer.Argument(..., help="A run folder written by `curate train` (runs/NAME)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA if present, else CPU) | cpu | cuda."),
    batch_size: int = typer.Option(256, "--batch-size", help="Eval images per forward pass."),
    templates: str | None = typer.Option(
        None, "--templates", help="CLIP zero-shot prompts: simple (2) | openai (80). [default: the run's]"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print metrics.json to stdout instead of the key numbers."),
) -> None:
    """Score a run on the balanced eval split; write metrics.json, report.md and plots into it."""
    from curate.evaluate import evaluate_run

    metrics = evaluate_run(run, device=device, batch_size=batch_size, templates=templates)
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
        return
    _print_key_numbers(metrics)
    typer.echo(str(Path(run) / "report.md"))


@app.command("compare")
def compare_command(
    runs: list[Path] = typer.Argument(..., help="Run folders, each already evaluated (metrics.json)."),
    tsv: bool = typer.Option(False, "--tsv", help="Print tab-separated values (raw numbers) instead of a table."),
) -> None:
    """One table of several runs side by side: accuracy, head/medium/tail, correlations, throughput."""
    from rich.console import Console

    from curate.evaluate import compare_runs, compare_table, compare_tsv
    from curate.ui import console

    rows = compare_runs(runs)
    if tsv:
        typer.echo(compare_tsv(rows), nl=False)
        return
    # piped output has no terminal width; 80 columns would squeeze thirteen columns into ellipses
    out = console if console.is_terminal else Console(width=200)
    out.print(compare_table(rows))
