"""Prompt assembly: persona first, examples trimmed before history, turns that strict templates accept."""

from __future__ import annotations

from companion.card.model import CardData
from companion.events import ContextBlock
from companion.messages import ChatMessage
from companion.prompt import NEW_CHAT_MARKER, assemble, normalize_turns, persona_prompt


def words(text: str) -> int:
    return len(text.split())


CARD = CardData(
    name="Mochi",
    description="{{char}} bakes bread for {{user}}.",
    personality="cheerful",
    scenario="A bakery at dawn.",
    system_prompt="{{original}} Never break character.",
    post_history_instructions="Reply in one or two sentences.",
    mes_example=(
        "<START>\n{{user}}: Hi\n{{char}}: Welcome in!\n<START>\n{{user}}: Bread?\n{{char}}: Fresh from the oven!"
    ),
)


def history(turns: int) -> list[ChatMessage]:
    out = []
    for i in range(turns):
        out += [
            ChatMessage(role="user", content=f"question {i} " + "word " * 5),
            ChatMessage(role="assistant", content=f"answer {i} " + "word " * 5),
        ]
    return out


def test_persona_uses_original_and_names() -> None:
    text = persona_prompt(CARD, user_name="Li")
    assert text.startswith("You are Mochi.") and "Never break character." in text
    assert "Mochi bakes bread for Li." in text and "personality: cheerful" in text and "{{" not in text


def test_everything_fits_when_budget_is_large() -> None:
    prompt = assemble(
        CARD,
        history(2),
        "How are you?",
        user_name="Li",
        count_tokens=words,
        budget_tokens=10_000,
        context=[ContextBlock(kind="knowledge", text="The bakery opens at 7.", source="lore.md")],
    )
    roles = [m.role for m in prompt.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert "Example conversations:\nLi: Hi\nMochi: Welcome in!" in prompt.messages[0].content
    last = prompt.messages[-1].content
    assert last.index("The bakery opens at 7.") < last.index("Reply in one or two") < last.index("How are you?")
    assert prompt.examples_kept == 2 and prompt.history_kept == 4


def test_examples_are_trimmed_before_history() -> None:
    full = assemble(CARD, history(3), "Hi", user_name="Li", count_tokens=words, budget_tokens=10_000)
    tight = assemble(CARD, history(3), "Hi", user_name="Li", count_tokens=words, budget_tokens=full.tokens - 3)
    assert tight.history_kept == 6 and tight.examples_kept == 1
    tighter = assemble(CARD, history(3), "Hi", user_name="Li", count_tokens=words, budget_tokens=full.tokens - 25)
    assert tighter.examples_kept == 0 and 0 < tighter.history_kept < 6
    # The newest turns are the ones kept.
    assert tighter.messages[-2].content.startswith("answer 2")


def test_history_is_trimmed_oldest_first_and_never_crashes() -> None:
    prompt = assemble(CARD, history(50), "Hi", user_name="Li", count_tokens=words, budget_tokens=60)
    assert prompt.messages[0].role == "system" and prompt.messages[-1].content.endswith("Hi")
    assert prompt.history_kept < 100


def test_normalize_turns_for_strict_templates() -> None:
    messages = normalize_turns(
        [
            ChatMessage(role="system", content="S"),
            ChatMessage(role="assistant", content="Hello! (greeting)"),
            ChatMessage(role="user", content="a"),
            ChatMessage(role="user", content="b"),
            ChatMessage(role="assistant", content="c"),
        ]
    )
    assert [(m.role, m.content) for m in messages] == [
        ("system", "S"),
        ("user", NEW_CHAT_MARKER),
        ("assistant", "Hello! (greeting)"),
        ("user", "a\n\nb"),
        ("assistant", "c"),
    ]
