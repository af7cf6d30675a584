"""The `companion` command. Each command group lives in its own module and is added here."""

from __future__ import annotations

import sys

import typer

from companion.cli import character as character_cli
from companion.cli import chat as chat_cli
from companion.cli import data as data_cli
from companion.cli import knowledge as knowledge_cli
from companion.cli import serve as serve_cli
from companion.cli import voice as voice_cli
from companion.cli.common import fail_cleanly

app = typer.Typer(
    name="companion",
    help="Character companion bots: chat, voice, bots, knowledge and training for a character folder.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(character_cli.app, name="character")
app.add_typer(knowledge_cli.app, name="knowledge")
from companion.cli import court as court_cli  # noqa: E402

app.add_typer(court_cli.app, name="court")
from companion.cli import create as create_cli  # noqa: E402

create_cli.register(app)
app.add_typer(data_cli.app, name="data")
chat_cli.register(app)
voice_cli.register(app)
serve_cli.register(app)
from companion.cli import train as train_cli  # noqa: E402

train_cli.register(app)


def main() -> None:
    with fail_cleanly():
        app(prog_name="companion")


if __name__ == "__main__":
    sys.exit(main())
