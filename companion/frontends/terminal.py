"""Chat in the terminal: replies stream token by token; /reset, /quit, /help."""

from __future__ import annotations

import asyncio
import sys

from rich.console import Console

from companion.events import ContextEvent, TextDeltaEvent
from companion.history import ConversationKey
from companion.session import Companion

HELP = (
    "/reset  start over (forget this conversation)\n/forget forget what she remembers about you\n"
    "/quit   leave\n/help   this text"
)


class TerminalChat:
    def __init__(self, companion: Companion, key: ConversationKey, user_name: str, *, show_context: bool) -> None:
        self.companion = companion
        self.key = key
        self.user_name = user_name
        self.show_context = show_context
        self.status = Console(stderr=True, highlight=False)

    async def reply(self, text: str) -> None:
        out = sys.stdout
        async for event in self.companion.turn(self.key, text, user_name=self.user_name):
            if isinstance(event, ContextEvent) and self.show_context:
                for block in event.blocks:
                    self.status.print(f"[dim]\\[{block.kind} {block.source}] {block.text}[/]")
            elif isinstance(event, TextDeltaEvent):
                out.write(event.text)
                out.flush()
        out.write("\n")
        out.flush()

    def speaker(self) -> str:
        return f"{self.companion.name}: "

    async def interactive(self) -> None:
        greeting = self.companion.greeting(self.key, self.user_name)
        if greeting:
            print(self.speaker() + greeting)
        else:
            count = len(self.companion.history.load(self.key))
            self.status.print(f"[dim](continuing our conversation: {count} messages; /reset to start over)[/]")
        self.status.print("[dim]/help for commands[/]")
        while True:
            try:
                line = await asyncio.to_thread(input, f"{self.user_name}: ")
            except EOFError:
                return
            command = line.strip()
            if not command:
                continue
            if command in ("/quit", "/exit"):
                return
            if command == "/help":
                print(HELP)
                continue
            if command == "/forget":
                count = await self.companion.forget(self.key)
                self.status.print(f"[dim](she forgot {count} things she remembered about you)[/]")
                continue
            if command == "/reset":
                self.companion.reset(self.key)
                self.status.print("[dim](conversation cleared)[/]")
                greeting = self.companion.greeting(self.key, self.user_name)
                if greeting:
                    print(self.speaker() + greeting)
                continue
            sys.stdout.write(self.speaker())
            await self.reply(command)
