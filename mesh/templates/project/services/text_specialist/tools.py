"""The text specialist's own tool: exact text measurements a model would only estimate.

A tool is a typed function with a docstring: ``@tool`` turns the type hints
into the schema the model sees, the summary into its description and the
``Args:`` section into each argument's description. The config names this
module (``tools = ["services.text_specialist.tools"]``), and the agent gets
every tool listed in ``__all__``. Add a tool by writing another function
here and listing it there.
"""

from __future__ import annotations

import math
import re

from mesh import tool

__all__ = ["text_stats"]

# A word is a run of letters or digits, joined by inner apostrophes (straight or typographic,
# \u2019) or hyphens: "don't" and "well-known" count once, and a dash never counts.
_WORD = re.compile(r"\w+(?:['\u2019-]\w+)*")
# A sentence ends at ., ! or ?; the text after the last one counts as a sentence too.
_SENTENCE_END = re.compile(r"[.!?]+")
MAX_WORDS_PER_MINUTE = 2000


@tool
def text_stats(text: str, words_per_minute: int = 200) -> dict[str, int]:
    """Count the words and sentences of a text and estimate its reading time.

    Args:
        text: The text to measure, exactly as given.
        words_per_minute: Reading speed (200 is typical for prose; 1 to 2000).

    Returns:
        {"words": ..., "sentences": ..., "reading_seconds": ...}, the time rounded up.
    """
    # A model will pass absurd speeds; a clear error lets it correct the call.
    if not 1 <= words_per_minute <= MAX_WORDS_PER_MINUTE:
        raise ValueError(
            f"words_per_minute must be from 1 to {MAX_WORDS_PER_MINUTE}, got {words_per_minute}"
        )
    words = len(_WORD.findall(text))
    sentences = sum(1 for part in _SENTENCE_END.split(text) if _WORD.search(part))
    return {
        "words": words,
        "sentences": sentences,
        "reading_seconds": math.ceil(words * 60 / words_per_minute),
    }
