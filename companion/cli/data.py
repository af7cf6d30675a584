"""`companion data ...`: chat logs, scripts and novels -> a clean, scrubbed character dataset.

    companion data import PATH... [--as NAME] [--me NAME] [--character ID] [--out FILE]
    companion data build ID                  the character's own corpus -> <folder>/dataset/
    companion data stats FILE|ID             counts per speaker and source, length histogram
    companion data scrub [FILE]              PII -> placeholders, stdin -> stdout by default

Every command takes `--out FILE` for its main output.
"""

# No `from __future__ import annotations`: see `with_opened`.
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from companion.character import Character, find_character
from companion.cli.common import ConfigOption, DataDirOption, console, err_console, settings_from, with_opened
from companion.config import Settings
from companion.errors import CompanionError

if TYPE_CHECKING:
    from training.cleaning import CleanConfig

app = typer.Typer(help="Turn chat logs, scripts and novels into a clean character dataset.", no_args_is_help=True)

AsOption = Annotated[
    list[str] | None,
    typer.Option("--as", help="The character's speaker name or id (repeat or comma-separate aliases)."),
]
MeOption = Annotated[
    list[str] | None, typer.Option("--me", help="Chat logs: your own name or id (the side that becomes the character).")
]
OutOption = Annotated[Path | None, typer.Option("--out", help="Write the main output to this file.")]
FormatOption = Annotated[str | None, typer.Option("--format", help="Skip detection: the importer to use.")]
LangOption = Annotated[str | None, typer.Option("--lang", help="Read this translation (Ren'Py tl/ folders).")]
GapOption = Annotated[float, typer.Option("--gap", help="Minutes of silence that start a new session.")]
EvalOption = Annotated[float, typer.Option("--eval-ratio", help="Share of conversations held out for eval.")]
UserNameOption = Annotated[str | None, typer.Option("--user-name", help="{{user}} in the persona prompt.")]
NarrationOption = Annotated[str, typer.Option("--narration", help="drop | context: narration lines in scripts.")]
MaxTokensOption = Annotated[
    int, typer.Option("--max-tokens", help="Longest sample (approximate tokens); longer talks are cut into windows.")
]
MaxTurnsOption = Annotated[int, typer.Option("--max-turns", help="Most messages in one sample.")]


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,} messages"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


def _options(lang: str | None, names: list[str], variables: list[str], datasets: list[str]):
    from training.importers import ReadOptions

    pairs = {}
    for item in variables:
        if "=" not in item:
            raise typer.BadParameter(f"--var takes KEY=VALUE, got {item!r}")
        key, _, value = item.partition("=")
        pairs[key.strip()] = value
    return ReadOptions(lang=lang, names=tuple(names), variables=pairs, datasets=tuple(datasets))


def _show_detections(detections: list) -> None:
    if len(detections) > 20:  # many files: one line per format
        counts: dict[str, int] = {}
        for detection in detections:
            counts[detection.importer.name] = counts.get(detection.importer.name, 0) + 1
        err_console.print(
            f"detected {len(detections)} files: " + ", ".join(f"{name} x{n}" for name, n in counts.items()),
            highlight=False,
        )
        return
    table = Table(title="detected", show_lines=False)
    table.add_column("file")
    table.add_column("format")
    table.add_column("confidence", justify="right")
    for detection in detections:
        table.add_row(str(detection.path), detection.importer.name, f"{detection.confidence:.2f}")
    err_console.print(table)


def _summary(report, target: str | None) -> None:
    data = report.to_json()
    err_console.print(
        f"[bold]{data['samples']['train']}[/] train and [bold]{data['samples']['eval']}[/] eval samples"
        + (f" -> {target}" if target else ""),
        highlight=False,
    )
    err_console.print(f"character side: {', '.join(report.assistant) or '(roles from the source)'}", highlight=False)
    for key, title in (
        ("dropped_messages", "messages dropped"),
        ("edited_messages", "messages edited"),
        ("dropped_samples", "samples dropped"),
    ):
        if data[key]:
            err_console.print(f"{title}: " + ", ".join(f"{k} {v}" for k, v in data[key].items()), highlight=False)
    if data["pii_replaced"]:
        err_console.print("PII replaced: " + ", ".join(f"{k} {v}" for k, v in data["pii_replaced"].items()))


def _no_samples_error(report, names: tuple[str, ...]) -> CompanionError:
    speakers = ", ".join(f"{name} ({count})" for name, count in report.speakers.most_common(8))
    if names:
        return CompanionError(
            f"no line by {' / '.join(names)} survived: check the name (speakers found: {speakers or 'none'})"
        )
    return CompanionError(
        "these sources do not say who the character is: choose with --as NAME "
        f"(or --me NAME for your own chat logs). Speakers found: {speakers or 'none'}"
    )


def _build(sources, skipped: list, names: tuple[str, ...], character: Character | None, user_name: str, config):
    """Read and clean `sources` (from `read_paths`, which fills `skipped`) into a dataset of `names`' lines,
    under the character's persona when there is one; show what was detected."""
    from training.dataset import Selection, build_dataset, character_system

    detections: list = []
    with _progress() as progress:
        task = progress.add_task("reading and cleaning", total=None)
        dataset = build_dataset(
            _tracked(sources, detections),
            selection=Selection(names=names, narration=config.narration),
            config=config,
            system=character_system(character.card, user_name) if character else None,
            character=character.id if character else None,
            progress=lambda n: progress.advance(task, n),
        )
    if not dataset.train and not dataset.eval:
        raise _no_samples_error(dataset.report, names)
    dataset.report.skipped_files = [{"path": str(p), "problem": problem} for p, problem in skipped]
    _show_detections(detections)
    return dataset


def _tracked(sources, detections: list) -> Iterator:
    for detection, conversations in sources:
        detections.append(detection)
        yield detection, conversations


@dataclass(frozen=True)
class CleaningOptions:
    """What `import` and `build` share: how to clean, and where the settings come from."""

    user_name: str | None
    gap: float
    eval_ratio: float
    narration: str
    max_tokens: int
    max_turns: int
    config: Path | None
    data_dir: Path | None

    def settings(self) -> Settings:
        return settings_from(self.config, self.data_dir)

    def clean_config(self, character: Character | None) -> "CleanConfig":
        """The options checked and turned into a cleaning config (under her public text, if any)."""
        from training.cleaning import CleanConfig
        from training.dataset import public_text

        if self.narration not in ("drop", "context"):
            raise typer.BadParameter("--narration is drop or context")
        if not 0 <= self.eval_ratio < 1:
            raise typer.BadParameter("--eval-ratio is between 0 and 1")
        public = public_text(character.folder, character.card) if character else ""
        if self.max_turns < 2 or self.max_tokens < 1:
            raise typer.BadParameter("--max-turns is at least 2 and --max-tokens at least 1")
        return CleanConfig(
            session_gap=timedelta(minutes=self.gap),
            eval_ratio=self.eval_ratio,
            narration=self.narration,
            public_text=public,
            max_sample_tokens=self.max_tokens,
            max_turns=self.max_turns,
        )


def _open_cleaning_options(
    user_name: UserNameOption = None,
    gap: GapOption = 30.0,
    eval_ratio: EvalOption = 0.05,
    narration: NarrationOption = "drop",
    max_tokens: MaxTokensOption = 2048,
    max_turns: MaxTurnsOption = 24,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> dict[str, Any]:
    options = CleaningOptions(user_name, gap, eval_ratio, narration, max_tokens, max_turns, config, data_dir)
    return {"cleaning": options}


# A command decorated with this gets the cleaning options, --config and --data-dir after its own options,
# in one `CleaningOptions` (nothing is loaded or checked before the command asks).
_with_cleaning_options = with_opened(_open_cleaning_options, "cleaning")


@app.command("import")
@_with_cleaning_options
def import_(
    cleaning: CleaningOptions,
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to import.")],
    as_: AsOption = None,
    me: MeOption = None,
    character_id: Annotated[
        str | None, typer.Option("--character", help="Write <character>/dataset/ with her persona as system prompt.")
    ] = None,
    fmt: FormatOption = None,
    out: OutOption = None,
    to: Annotated[
        str, typer.Option("--to", help="--out format: sharegpt, alpaca, openai or conversations.")
    ] = "sharegpt",
    lang: LangOption = None,
    names: Annotated[list[str] | None, typer.Option("--name", help="Novels: a speaker name to look for.")] = None,
    variables: Annotated[list[str] | None, typer.Option("--var", help="KEY=VALUE for {{KEY}} in the data.")] = None,
    datasets: Annotated[list[str] | None, typer.Option("--dataset", help="dataset_info.json: which entries.")] = None,
) -> None:
    """Import chat logs, scripts, novels or datasets; say what was detected; clean and export."""
    from training.dataset import dataset_name, split_names, write_dataset, write_samples
    from training.importers import read_paths

    if as_ and me:
        raise typer.BadParameter("use --as (scripts, novels) or --me (your chat logs), not both")
    chosen = split_names((as_ or []) + (me or []))
    options = _options(lang, [*(names or []), *chosen], variables or [], datasets or [])
    skipped: list = []
    sources = read_paths(paths, options, fmt, skipped=skipped)

    if to == "conversations":
        if out is None:
            raise typer.BadParameter("--to conversations needs --out FILE")
        detections: list = []
        _write_conversations(_tracked(sources, detections), out)
        _show_detections(detections)
        return
    character = None
    settings = cleaning.settings()
    if character_id:
        character = find_character(character_id, settings.character_search_path)
    clean_config = cleaning.clean_config(character)
    dataset = _build(sources, skipped, chosen, character, cleaning.user_name or settings.user_name, clean_config)
    if skipped:
        names = ", ".join(str(path) for path, _ in skipped)
        err_console.print(f"skipped {len(skipped)} file(s) no importer recognised: {names}", highlight=False)
    target = None
    if character is not None:
        target = write_dataset(character.folder, dataset, dataset_name(character.id))
    if out is not None:
        write_samples(out, dataset.train + dataset.eval, to)
        target = f"{target}, {out}" if target else str(out)
    _summary(dataset.report, str(target) if target else None)
    if target is None:
        err_console.print("nothing written: add --character ID to build her dataset, or --out FILE")


def _write_conversations(sources, out: Path) -> None:
    from companion import atomic
    from training.cleaning import Tally, normalize_text
    from training.pii import scrub

    tally = Tally()
    lines = []
    for _detection, conversations in sources:
        for conversation in conversations:
            messages = [
                m.model_copy(update={"text": scrub(normalize_text(m.text), tally.pii)}) for m in conversation.messages
            ]
            lines.append(conversation.model_copy(update={"messages": messages}).model_dump_json(exclude_defaults=True))
    atomic.write_text(out, "".join(line + "\n" for line in lines))
    err_console.print(f"wrote {len(lines)} conversations to {out} (PII replaced: {dict(tally.pii)})", highlight=False)


def corpus_files(character: Character) -> list[Path]:
    """Dialogue sources in a character's corpus: everything but lore (`corpus/lore/`, *.md)."""
    corpus = character.corpus_dir
    if not corpus.is_dir():
        return []
    files = []
    for path in sorted(corpus.rglob("*")):
        relative = path.relative_to(corpus)
        if not path.is_file() or relative.parts[0] in ("lore", "knowledge") or path.suffix.lower() == ".md":
            continue
        if any(part.startswith(".") for part in relative.parts):
            continue
        files.append(path)
    return files


@app.command("build")
@_with_cleaning_options
def build(
    cleaning: CleaningOptions,
    character_id: Annotated[str, typer.Argument(help="The character whose corpus to build from.")],
    as_: AsOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="Also write report.json here.")] = None,
) -> None:
    """Build <character>/dataset/ from her own corpus (dialogue jsonl, scenes, chat logs in corpus/)."""
    from training.dataset import dataset_name, split_names, write_dataset
    from training.importers import ReadOptions, read_paths
    from training.stats import write_json

    settings = cleaning.settings()
    character = find_character(character_id, settings.character_search_path)
    files = corpus_files(character)
    if not files:
        raise CompanionError(
            f"{character.corpus_dir}: no dialogue files (corpus/dialogues/*.jsonl, corpus/scenes/*.txt)"
        )
    card = character.card
    chosen = split_names(as_ or []) or tuple(n for n in (card.name, card.nickname) if n)
    skipped: list = []
    sources = read_paths(files, ReadOptions(names=chosen), skipped=skipped)
    clean_config = cleaning.clean_config(character)
    dataset = _build(sources, skipped, chosen, character, cleaning.user_name or settings.user_name, clean_config)
    target = write_dataset(character.folder, dataset, dataset_name(character.id))
    if out is not None:
        write_json(out, dataset.report.to_json())
    _summary(dataset.report, str(target))


@app.command("stats")
def stats(
    target: Annotated[str, typer.Argument(help="A file or folder to import, or a character id.")],
    out: Annotated[Path | None, typer.Option("--out", help="Write the counts as JSON here.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Where to save the length histogram (PNG).")] = None,
    fmt: FormatOption = None,
    lang: LangOption = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Counts per speaker and source, message lengths, and a saved length histogram."""
    from training.importers import ReadOptions, read_paths
    from training.stats import Stats, from_sharegpt_file, plot_lengths, write_json

    result = Stats()
    path = Path(target)
    title = Path(target).name if Path(target).exists() else target
    if path.exists():
        for detection, conversations in read_paths([path], ReadOptions(lang=lang), fmt, skipped=[]):
            for conversation in conversations:
                result.add(conversation, detection.importer.name)
        default_plot = Path.cwd() / f"{path.stem or 'data'}.lengths.png"
    else:
        settings = settings_from(config, data_dir)
        character = find_character(target, settings.character_search_path)
        dataset = character.folder / "dataset"
        title = f"{character.card.name} ({character.id})"
        if (dataset / "train.jsonl").is_file():
            for name in ("train.jsonl", "eval.jsonl"):
                if (dataset / name).is_file():
                    for conversation in from_sharegpt_file(dataset / name):
                        result.add(conversation, name)
            default_plot = dataset / "lengths.png"
        else:
            files = corpus_files(character)
            for detection, conversations in read_paths(files, ReadOptions(), skipped=[]):
                for conversation in conversations:
                    result.add(conversation, detection.importer.name)
            default_plot = Path.cwd() / f"{character.id}.lengths.png"
    summary = result.summary()
    plot_path = plot or (out.with_suffix(".png") if out else default_plot)
    plot_lengths(result, plot_path, title)
    summary["plot"] = str(plot_path)
    if out is not None:
        write_json(out, summary)
    _print_stats(summary)


def _print_stats(summary: dict) -> None:
    console.print(f"[bold]{summary['conversations']}[/] conversations, [bold]{summary['messages']}[/] messages")
    for key, title in (("per_speaker", "speaker"), ("per_source", "source"), ("per_format", "format")):
        if not summary[key]:
            continue
        table = Table(title=f"per {title}")
        table.add_column(title)
        table.add_column("messages", justify="right")
        for name, count in list(summary[key].items())[:20]:
            table.add_row(name, str(count))
        console.print(table)
    for group, values in summary["length_tokens"].items():
        console.print(f"{group} length (tokens): {values}", highlight=False)
    console.print(f"length histogram: {summary['plot']}", highlight=False)


@app.command("scrub")
def scrub_(
    file: Annotated[Path | None, typer.Argument(help="Text to scrub (default: standard input).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write here instead of standard output.")] = None,
) -> None:
    """Replace PII with typed placeholders (<PHONE>, <EMAIL>, <ID_CARD>, ...), line by line."""
    from collections import Counter

    from companion import atomic
    from training.pii import scrub
    from training.textio import read_text

    counts: Counter[str] = Counter()
    if file is None:
        lines = (line for line in sys.stdin)
        if out is None:
            for line in lines:
                sys.stdout.write(scrub(line, counts))
                sys.stdout.flush()
            _report_scrub(counts)
            return
        text = "".join(lines)
    else:
        text = read_text(file).text
    result = "".join(scrub(line, counts) for line in text.splitlines(keepends=True))
    if out is None:
        sys.stdout.write(result)
    else:
        atomic.write_text(out, result)
    _report_scrub(counts)


from companion.cli.distill import distill as _distill  # noqa: E402  (novels -> role-play data through an LLM)

app.command("distill")(_distill)


def _report_scrub(counts) -> None:
    if counts:
        err_console.print("replaced: " + json.dumps(dict(counts.most_common()), ensure_ascii=False), highlight=False)
