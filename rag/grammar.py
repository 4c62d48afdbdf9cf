"""The grammar of answers: the citation markers every layer reads, and the shape an answer must
take when citations are constrained.

**Markers.** :data:`MARKER` is the one pattern of a citation marker; :mod:`rag.citations` (and
through it ``eval``) and ``ui`` all read markers with it and the functions below, so what the
citer checks, what the metrics count and what the page styles are the same markers. A marker is
``[`` numbers ``]``, the numbers separated by ``,`` or ``;`` with optional white space around the
separator and none inside the brackets: ``[1]``, ``[1, 2]``, ``[1;2]``, ``[1 ,2]``; ``[1][2]`` is
two markers. ``[a]``, ``[1-2]``, ``[ 1 ]`` and ``[]`` are not markers. A number in brackets is a
marker whatever its size (``[2023]`` too): the citer drops one that names no passage.

**Constrained answers.** :func:`answer_pattern` is the regex handed to vLLM's structured outputs,
so a model that would not cite (the 135M default writes no ``[n]`` on its own) cannot finish a
sentence without one. Its markers are a subset of :data:`MARKER`'s: one number each.

The pattern admits exactly one of:

- the abstention sentence (:data:`rag.prompt.ABSTENTION`), alone; or
- 1 to ``max_sentences`` sentences, each ending in ``.``, ``!`` or ``?`` followed by one or more
  markers ``[n]`` whose numbers are passages present in that prompt.

Why each restriction is there:

- Markers only of passages in the prompt: a number that points nowhere cannot be written.
- No ``[``, ``]`` or line break inside a sentence, and a sentence starts with a letter and has
  two words at least: the small model echoes the passage headers ("[1] ftp-1.1.3.pdf, page 13")
  and opens numbered lists of guesses ("1. [1] ..."); neither fits the shape.
- A full stop followed by white space ends a sentence; one followed by a letter or digit does
  not ("4.2", "U.S."), so a sentence cannot smuggle in more sentences before its marker.
- ``max_sentences`` bounds the answer: without it the model repeats one sentence until
  ``max_answer_tokens`` runs out (measured: 205 tokens on average, mostly repetition).
- At most three markers after a sentence: unbounded, the model wrote "[3] [4] [5] [1] [2] ..."
  until its token budget ran out.
- A sentence's length is bounded by ``max_answer_tokens`` only, not in the pattern: a bounded
  repetition ``{0,300}`` made xgrammar's matcher the bottleneck (2.3 tokens/s against 30 with
  ``*``, measured on this CPU with four prompts); a sentence cut short by the token budget has no
  marker and goes to post-hoc attribution (:mod:`rag.citations`).

No ``^``/``$`` anchors: vLLM matches the whole output already, and xgrammar warns on them.
"""

from __future__ import annotations

import re
from collections.abc import Container

from rag.prompt import ABSTENTION

# The separator of a marker's numbers: "," or ";", white space around it allowed.
_SEPARATOR = r"\s*[,;]\s*"
MARKER = re.compile(rf"\[(?P<numbers>\d+(?:{_SEPARATOR}\d+)*)\]")
"""One citation marker (see the module docstring); group ``numbers`` (group 1) is its numbers as
written."""
# A marker with the white space before it, and the white space after it when punctuation follows:
# removing all of it leaves "150 kg." of "150 kg [1]." and "150 kg [1] .", never "150 kg .".
_MARKER_AND_SPACES = re.compile(rf"(?P<before>[ \t]*){MARKER.pattern}(?P<after>(?:[ \t]+(?=[.,;:!?]))?)")

# A character inside a sentence: anything but brackets, line breaks and sentence-ending
# punctuation, or such punctuation when a non-space follows it (decimals, abbreviations).
_INNER = r"(?:[^\[\]\n.!?]|[.!?][^\s\[\]])"


def marker_numbers(numbers: str) -> list[int]:
    """The numbers of a marker's group ``numbers`` (``"1, 2"`` -> ``[1, 2]``), in order, repeats
    kept."""
    return [int(n) for n in re.split(_SEPARATOR, numbers)]


def parse_markers(text: str) -> list[tuple[int, int, list[int]]]:
    """Every marker of ``text`` as ``(start, end, numbers)``, in order of appearance."""
    return [(m.start(), m.end(), marker_numbers(m["numbers"])) for m in MARKER.finditer(text)]


def keep_markers(text: str, valid: Container[int]) -> str:
    """``text`` with each marker's numbers outside ``valid`` dropped: a marker keeping some is
    rewritten ``[1, 2]``; one keeping none goes with the spaces and tabs before it, and those after
    it when punctuation follows (no "150 kg ."). Line breaks and other text stay as they are."""

    def rewrite(match: re.Match[str]) -> str:
        numbers = [n for n in marker_numbers(match["numbers"]) if n in valid]
        if not numbers:
            return ""
        return f"{match['before']}[{', '.join(map(str, numbers))}]{match['after']}"

    return _MARKER_AND_SPACES.sub(rewrite, text)


def strip_markers(text: str) -> str:
    """``text`` without its markers, white space collapsed to single spaces (line breaks too), and
    no space left where a marker was before punctuation: "150 kg [1]." -> "150 kg."."""
    return " ".join(keep_markers(" ".join(text.split()), ()).split())


def marker_alternatives(passages: int) -> str:
    """A regex alternation of the passage numbers ``1..passages`` (longest first)."""
    return "|".join(str(n) for n in range(passages, 0, -1))


def answer_pattern(passages: int, max_sentences: int) -> str | None:
    """The regex an answer over ``passages`` numbered passages must match; None with no passages
    (nothing could be cited, so the answer is left free: closed-book runs)."""
    if passages < 1:
        return None
    if max_sentences < 1:
        raise ValueError(f"max_sentences must be at least 1, got {max_sentences}")
    markers = rf"(?: ?\[(?:{marker_alternatives(passages)})\]){{1,3}}"
    # A sentence starts with a letter or an opening quote and has at least two words: the small
    # model otherwise opens a numbered list ("1. [1] handbook.pdf, page 2, page 3, ...").
    sentence = rf"[A-Za-z\"'(]{_INNER}* {_INNER}*[.!?]{markers}"
    answer = rf"{sentence}(?: {sentence}){{0,{max_sentences - 1}}}"
    return rf"(?:{_literal(ABSTENTION)}|{answer})"


def _literal(text: str) -> str:
    """``text`` as a regex matching itself. Unlike ``re.escape``, spaces stay plain: the regex
    goes to xgrammar, whose parser need not read Python's escaped spaces."""
    return re.sub(r"([.^$*+?{}\[\]\\|()])", r"\\\1", text)
