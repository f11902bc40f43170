"""Scoring answers of closed-answer video QA (synthetic, MVBench / Video-MME style exports).

Multiple choice is scored by option letter or by the option's text; open answers by normalized
match. Pure functions, no model.
"""

from __future__ import annotations

import re
import string

LETTERS = string.ascii_uppercase


def normalize_answer(text: str) -> str:
    """Lower case, hyphens and underscores as spaces, punctuation and articles dropped, spaces squeezed."""
    text = text.lower().replace("-", " ").replace("_", " ")
    text = "".join(" " if ch in string.punctuation else ch for ch in text)
    words = [w for w in text.split() if w not in {"a", "an", "the"}]
    return " ".join(words)


def option_letter(prediction: str, num_options: int) -> str | None:
    """The option letter a prediction names: "B", "(B)", "B.", "B) left", "Answer: B"; else None.

    Only an upper-case letter counts, unless it is the whole answer ("b"), so that "a square"
    is read as text, not as option A.
    """
    text = prediction.strip()
    text = re.sub(r"^answer\s*[:\-]?\s*", "", text, flags=re.IGNORECASE)
    m = re.fullmatch(r"\(?([A-Za-z])\)?[.:)]?", text) or re.match(r"\(?([A-Z])\)?[.:)]?(?:\s|$)", text)
    if not m:
        return None
    letter = m.group(1).upper()
    return letter if letter in LETTERS[:num_options] else None


def is_correct(prediction: str, answer: str, options: list[str] | None = None) -> bool:
    """True when `prediction` gives `answer`: by its option letter when it names one, else by text."""
    if options:
        if answer not in options:
            raise ValueError(f"answer {answer!r} is not one of the options {options}")
        letter = option_letter(prediction, len(options))
        if letter is not None:
            return letter == LETTERS[options.index(answer)]
    return normalize_answer(prediction) == normalize_answer(answer)


def options_prompt(question: str, options: list[str]) -> str:
    """A Video-MME-style multiple-choice prompt: the question, lettered options, the instruction."""
    lines = [question.strip()] + [f"({LETTERS[i]}) {opt}" for i, opt in enumerate(options)]
    return "\n".join(lines) + "\nAnswer with the option's letter."
