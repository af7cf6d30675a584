"""`companion train`, `companion eval` and `companion adapter merge|vllm-layout`.

Every field of `training.lora.config.TrainConfig` is a flag of `companion train` (generated
from the model, so a new knob is a new flag): `--lora-rank 16 --learning-rate 1e-4 ...`.
Precedence: defaults < `--config file.yaml` < flags.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from companion.cli.common import ConfigOption, DataDirOption, console, err_console, settings_from

adapter_app = typer.Typer(help="Adapter tools: merge into the base model, lay out for vLLM.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("train")(_train_command())
    app.command("eval")(eval_)
    app.add_typer(adapter_app, name="adapter")


# -- companion train ---------------------------------------------------------------------------
def _flag_type(annotation: Any) -> tuple[Any, str]:
    """(a typer-friendly type, choices for the help) for a TrainConfig field annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is Literal:
        return str, " [" + "|".join(str(a) for a in typing.get_args(annotation)) + "]"
    return annotation, ""


def _config_parameters() -> list[inspect.Parameter]:
    from training.lora.config import TrainConfig

    params = []
    for name, field in TrainConfig.model_fields.items():
        kind, choices = _flag_type(field.annotation)
        flag = "--" + name.replace("_", "-")
        decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
        default = field.default
        help_text = (field.description or "") + choices + f" (default: {default})"
        option = typer.Option(*decls, help=help_text, rich_help_panel="Training settings", show_default=False)
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, option]
            )
        )
    return params


def _train_command():
    def train(
        character: Annotated[str, typer.Argument(help="Character id (folder name).")],
        resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint.")] = False,
        export_checkpoint: Annotated[
            bool,
            typer.Option("--export-checkpoint", help="Write the adapter from the last checkpoint, without training."),
        ] = False,
        config_file: Annotated[
            Path | None,
            typer.Option("--config-file", help="YAML/JSON with training settings (e.g. a train_config.json)."),
        ] = None,
        out: Annotated[
            Path | None, typer.Option("--out", help="Adapter folder (default: the character's adapter/).")
        ] = None,
        show_config: Annotated[
            bool, typer.Option("--show-config", help="Print the resolved settings and exit.")
        ] = False,
        method: Annotated[
            str, typer.Option("--method", help="sft (her lines) or dpo (preference pairs, on top of her SFT adapter).")
        ] = "sft",
        beta: Annotated[float | None, typer.Option("--beta", help="dpo: distance from the SFT adapter (0.1).")] = None,
        pairs: Annotated[
            Path | None, typer.Option("--pairs", help="dpo: preference pairs (default: <character>/preference/).")
        ] = None,
        config: ConfigOption = None,
        data_dir: DataDirOption = None,
        **knobs: Any,
    ) -> None:
        """Train the character's LoRA adapter on her dataset (dataset/ or corpus/dialogues/)."""
        from companion.character import find_character
        from training.lora.config import TrainConfig

        settings = settings_from(config, data_dir)
        if method != "sft":  # preference training (training/preference)
            from training.preference.cli import train_dpo_command

            return train_dpo_command(
                character, settings, method=method, beta=beta, pairs=pairs, out=out, resume=resume,
                config_file=config_file, show_config=show_config, knobs=knobs, progress=RichProgress(),
            )  # fmt: skip
        base = TrainConfig.from_file(config_file) if config_file else TrainConfig()
        try:
            train_config = base.updated(**knobs)
        except Exception as error:  # pydantic's message names the field
            raise typer.BadParameter(str(error)) from None
        if show_config:
            print(json.dumps(train_config.model_dump(), indent=2, ensure_ascii=False))
            return
        character_obj = find_character(character, settings.character_search_path)
        from training.lora.trainer import Trainer

        progress = RichProgress()
        trainer = Trainer(character_obj, settings, train_config, out_dir=out, progress=progress)
        result = trainer.run(resume=resume, export_only=export_checkpoint)
        _print_training_summary(result.report, result.adapter_dir)

    own = [
        p
        for p in inspect.signature(train, eval_str=True).parameters.values()
        if p.kind != inspect.Parameter.VAR_KEYWORD
    ]
    train.__signature__ = inspect.Signature([*own, *_config_parameters()])  # type: ignore[attr-defined]
    return train


class RichProgress:
    """A rich progress bar: step, loss, held-out loss, tokens/s, elapsed and ETA."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("[bold]training[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss [cyan]{task.fields[loss]}[/]"),
            TextColumn("eval [magenta]{task.fields[eval]}[/]"),
            TextColumn("{task.fields[tps]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err_console,
            transient=False,
        )
        self.task = None

    def start(self, total_steps: int, first_step: int) -> None:
        self.bar.start()
        self.task = self.bar.add_task("train", total=total_steps, completed=first_step, loss="-", eval="-", tps="-")

    def update(self, step: int, metrics: dict[str, Any]) -> None:
        eval_loss = metrics.get("eval_loss")
        fields = {
            "loss": f"{metrics['loss']:.3f}",
            "eval": f"{eval_loss:.3f}" if eval_loss is not None else "-",
            "tps": f"{metrics['tokens_per_s']:.0f}",
        }
        self.bar.update(self.task, completed=step, **fields)
        if not self.bar.console.is_terminal:  # a log file: one line per step instead of a live bar
            task = self.bar.tasks[0]
            eta = f"{task.time_remaining:.0f}s" if task.time_remaining is not None else "-"
            self.bar.console.print(
                f"step {step}/{task.total} loss {fields['loss']} eval {fields['eval']} {fields['tps']} tok/s "
                f"elapsed {task.elapsed or 0:.0f}s ETA {eta}",
                highlight=False,
            )

    def note(self, text: str) -> None:
        (self.bar.console if self.task is not None else err_console).print(f"[dim]{text}[/]", highlight=False)

    def finish(self) -> None:
        self.bar.stop()


def _print_training_summary(report: dict[str, Any], adapter_dir: Path) -> None:
    m = report["metrics"]
    console.print(f"[bold green]adapter written[/] to {adapter_dir}", highlight=False)

    def fmt(value: Any, spec: str = ".3f") -> str:
        return "n/a" if value is None else format(value, spec)

    console.print(
        f"held-out loss {fmt(m['eval_loss_base'])} -> {fmt(m['eval_loss'])}; perplexity of her lines "
        f"{fmt(m['eval_lines_perplexity_base'], '.2f')} -> {fmt(m['eval_lines_perplexity'], '.2f')}; "
        f"{m['tokens_per_second']:.0f} tokens/s, {m['train_seconds'] / 60:.1f} min, peak RSS {m['peak_rss_mb']:.0f} MB",
        highlight=False,
    )
    for note in report["data"]["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False)


# -- companion eval ----------------------------------------------------------------------------
def eval_(
    character: Annotated[str, typer.Argument(help="Character id (folder name).")],
    adapter: Annotated[Path | None, typer.Option("--adapter", help="Adapter folder (default: hers).")] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Base model (default: the one the adapter was trained on).")
    ] = None,
    probes: Annotated[Path | None, typer.Option("--probes", help="Probe questions, one per line.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", help="Reply length cap.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 0,
    eval_samples: Annotated[
        int | None, typer.Option("--eval-samples", help="Score only the first N held-out samples (default: all).")
    ] = None,
    samples: Annotated[int, typer.Option("--samples", help="Side-by-side replies in the report.")] = 12,
    skip_generation: Annotated[bool, typer.Option("--perplexity-only", help="Skip the probe replies.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    write: Annotated[bool, typer.Option("--write/--no-write", help="Write eval.md and eval.json.")] = True,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for eval.md/eval.json (default: the adapter's).")
    ] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Base vs adapter: held-out perplexity of her lines, format health on probes, side-by-side replies."""
    from companion.character import find_character
    from training.lora.evaluate import evaluate, read_probes, render_markdown, write_reports

    settings = settings_from(config, data_dir)
    found = find_character(character, settings.character_search_path)
    result = evaluate(
        found,
        settings,
        adapter_dir=adapter,
        model=model,
        probes=read_probes(probes) if probes else None,
        max_new_tokens=max_new_tokens,
        seed=seed,
        eval_samples=eval_samples,
        on_status=lambda text: err_console.print(f"[dim]{text}[/]", highlight=False),
        generate=not skip_generation,
    )
    from training.preference.evaluate import attach_preference  # preference accuracy, when she has pairs

    attach_preference(result, found, settings, adapter_dir=adapter, on_status=err_console.print)
    if write:
        md, _ = write_reports(result, out or Path(result.adapter_dir))
        err_console.print(f"[dim]wrote {md} and eval.json[/]", highlight=False)
    if as_json:
        data = result.as_dict()
        data.pop("probes")
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        console.print(render_markdown(result, samples=samples), highlight=False, markup=False)


# -- companion adapter ...  --------------------------------------------------------------------
@adapter_app.command("merge")
def merge(
    character: Annotated[str, typer.Argument(help="Character id whose adapter to merge.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the merged model.")],
    dtype: Annotated[str, typer.Option("--dtype", help="bf16, fp16 or fp32.")] = "bf16",
    replace: Annotated[bool, typer.Option("--replace", help="Replace an existing --out folder.")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Merge her adapter into the base model: a plain transformers folder (safetensors)."""
    from companion.character import find_character
    from training.lora.tools import merge_adapter

    if dtype not in ("bf16", "fp16", "fp32"):
        raise typer.BadParameter("--dtype must be bf16, fp16 or fp32")
    settings = settings_from(config, data_dir)
    found = find_character(character, settings.character_search_path)
    info = merge_adapter(found.adapter_dir, out, settings.data_dir, dtype=dtype, replace=replace)
    console.print(
        f"merged {found.adapter_dir} into {info['base_model']} -> {out} ({dtype}); "
        f"max logit difference vs base+adapter: {info['max_logit_difference']:.2e}",
        highlight=False,
    )


@adapter_app.command("vllm-layout")
def vllm_layout_(
    characters: Annotated[list[str], typer.Argument(help="Character ids to serve.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the LoRA modules, serve.sh and companion.toml.")],
    base_model: Annotated[
        str | None, typer.Option("--base-model", help="What vLLM loads as the base (default: the adapters' base).")
    ] = None,
    port: Annotated[int, typer.Option("--port")] = 8000,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Lay adapters out as vLLM LoRA modules: one base, many characters (`openai` plugin)."""
    from companion.character import find_character
    from training.lora.tools import vllm_layout

    settings = settings_from(config, data_dir)
    found = [find_character(c, settings.character_search_path) for c in characters]
    info = vllm_layout(found, out, settings.data_dir, base_model=base_model, port=port)
    console.print(
        f"wrote {len(info['modules'])} LoRA module(s) to {out}; start with {out / 'serve.sh'}", highlight=False
    )
