"""Prompt assembly: what the model sees each turn, within a token budget.

Layout (stable prefix first, so a backend can reuse its KV cache across turns):
  system     persona from the card (+ example dialogue while it fits)
  history    earlier turns, newest kept first
  user       retrieved context, the post-history instruction, then the user's words
Example dialogue is dropped first when the context fills, then the oldest history.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from companion.card.examples import parse_examples
from companion.card.macros import apply_original, substitute
from companion.card.model import CardData
from companion.events import ContextBlock
from companion.messages import ChatMessage

MESSAGE_OVERHEAD_TOKENS = 4
NEW_CHAT_MARKER = "[Start a new chat]"
DEFAULT_SYSTEM_PROMPT = (
    "You are {{char}}. Stay in character: speak as {{char}} would, in first person, "
    "and reply to {{user}} in the language {{user}} writes in."
)
CONTEXT_HEADINGS = {
    "lorebook": "World info",
    "knowledge": "What {{char}} knows",
    "memory": "What {{char}} remembers about {{user}}",
    "classic_line": "Lines {{char}} has said before (for style)",
}

TokenCounter = Callable[[str], int]


def persona_prompt(card: CardData, *, user_name: str) -> str:
    """The card's system prompt with description, personality and scenario: the stable part.

    Training data uses the same text as its system prompt, so the adapter learns under the
    exact prompt it will see at chat time.
    """
    parts = [apply_original(card.system_prompt, DEFAULT_SYSTEM_PROMPT)]
    if card.description.strip():
        parts.append(card.description.strip())
    if card.personality.strip():
        parts.append(f"{{{{char}}}}'s personality: {card.personality.strip()}")
    if card.scenario.strip():
        parts.append(f"Scenario: {card.scenario.strip()}")
    return substitute("\n\n".join(parts), char=card.name, user=user_name)


def render_examples(card: CardData, *, user_name: str) -> list[str]:
    """Each <START> block of example dialogue as a transcript with real names."""
    blocks = []
    for block in parse_examples(card.mes_example):
        lines = [f"{user_name if m.role == 'user' else card.name}: {m.content}" for m in block]
        blocks.append(substitute("\n".join(lines), char=card.name, user=user_name))
    return blocks


def render_context(blocks: Sequence[ContextBlock], *, char: str, user: str) -> str:
    sections = []
    for kind, heading in CONTEXT_HEADINGS.items():
        texts = [b.text.strip() for b in blocks if b.kind == kind and b.text.strip()]
        if texts:
            sections.append(f"[{heading}]\n" + "\n".join(texts))
    return substitute("\n\n".join(sections), char=char, user=user)


@dataclass(frozen=True)
class AssembledPrompt:
    messages: list[ChatMessage]
    tokens: int
    examples_kept: int
    history_kept: int


def assemble(
    card: CardData,
    history: Sequence[ChatMessage],
    user_text: str,
    *,
    user_name: str,
    count_tokens: TokenCounter,
    budget_tokens: int,
    context: Sequence[ContextBlock] = (),
) -> AssembledPrompt:
    def cost(text: str) -> int:
        return count_tokens(text) + MESSAGE_OVERHEAD_TOKENS

    persona = persona_prompt(card, user_name=user_name)
    final_parts = [render_context(context, char=card.name, user=user_name)]
    if card.post_history_instructions.strip():
        final_parts.append(substitute(card.post_history_instructions.strip(), char=card.name, user=user_name))
    final_parts.append(user_text)
    final_user = "\n\n".join(p for p in final_parts if p)

    used = cost(persona) + cost(final_user)
    kept_history: list[ChatMessage] = []
    for message in reversed(history):
        if used + cost(message.content) > budget_tokens:
            break
        used += cost(message.content)
        kept_history.insert(0, message)

    examples = render_examples(card, user_name=user_name)
    kept_examples: list[str] = []
    for block in examples:
        block_cost = count_tokens(block) + 2
        if used + block_cost > budget_tokens:
            break
        used += block_cost
        kept_examples.append(block)

    system = persona
    if kept_examples:
        system += "\n\nExample conversations:\n" + "\n\n".join(kept_examples)
    messages = normalize_turns(
        [ChatMessage(role="system", content=system), *kept_history, ChatMessage(role="user", content=final_user)]
    )
    return AssembledPrompt(
        messages=messages, tokens=used, examples_kept=len(kept_examples), history_kept=len(kept_history)
    )


def normalize_turns(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """Make turns alternate user/assistant after an optional system message, as strict chat
    templates (Gemma's among them) require: same-role neighbours merge, and a conversation that
    opens with the character's greeting gets SillyTavern's new-chat marker before it."""
    out: list[ChatMessage] = []
    for message in messages:
        if out and out[-1].role == message.role:
            out[-1] = ChatMessage(role=message.role, content=f"{out[-1].content}\n\n{message.content}")
            continue
        if message.role == "assistant" and (not out or out[-1].role == "system"):
            out.append(ChatMessage(role="user", content=NEW_CHAT_MARKER))
        out.append(message)
    return out
