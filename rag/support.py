"""Support scores: how well a span of a passage supports a claim, from 0 to 1.

One Protocol, three scorers, chosen from ``citations`` by
:meth:`rag.components.Components.support_scorer`:

- :class:`LexicalSupport`: the share of the claim's content words (:func:`rag.words.content_words`:
  keyword search's stop words and stemmer) found in the span. Needs no model; checks words, not
  meaning (a swapped number with the same words passes).
- :class:`EmbeddingSupport` (the default when an embedder is loaded, which every pipeline has):
  the mean of the lexical share and the cosine similarity of claim and span under the
  embedding model that already serves retrieval. The cosine catches paraphrases the word
  count misses ("28 days off" for "28 days of paid vacation"); the word share keeps a
  topically close but different sentence from passing on similarity alone. This is the
  combination RAGFlow's ``insert_citations`` uses (vector similarity plus token overlap).
- :class:`NliSupport`: an NLI cross-encoder's entailment probability, for a user who
  configures one (``citations.support_model``, hub id or folder); nothing ships one offline.

The two local scorers also check numbers, which neither words nor embeddings do: a claim's
support is multiplied by the share of its numbers that the span contains
(:func:`number_agreement`). "The limit is 1.55 m/s" against a span saying "1.5 m/s" shares every
word and nearly the whole embedding; a number is the fact a user asks for (FinanceBench is
nearly all numbers), so a claim with a number the passage does not hold is not supported.

Scorers take many pairs at once, so a batch of answers costs one encode call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from rag.embedder import Embedder
from rag.errors import ModelLoadError, first_line
from rag.words import content_words

# A number not glued to a word before it ("R2" and "Q4" are names, not numbers).
_NUMBER = re.compile(r"(?<![A-Za-z\d.,])\d+(?:[.,]\d+)*")


def numbers(text: str) -> set[str]:
    """The numbers in ``text``, thousands separators removed and trailing decimal zeros dropped
    ("1,577.00" and "1577" are one number)."""
    found = set()
    for raw in _NUMBER.findall(text):
        value = raw.replace(",", "") if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", raw) else raw
        if "." in value:
            value = value.rstrip("0").rstrip(".")
        found.add(value)
    return found


def number_agreement(claim: str, span: str) -> float:
    """Share of ``claim``'s numbers that ``span`` contains; 1.0 when the claim has none."""
    claimed = numbers(claim)
    if not claimed:
        return 1.0
    return len(claimed & numbers(span)) / len(claimed)


def lexical_support(claim: str, span: str) -> float:
    """Share (0 to 1) of ``claim``'s content words found in ``span``; 0 for a claim of stop words only."""
    claim_words = set(content_words(claim))
    if not claim_words:
        return 0.0
    return len(claim_words & set(content_words(span))) / len(claim_words)


class SupportScorer(Protocol):
    """Scores ``(claim, span)`` pairs: 0 (no support) to 1 (fully supported)."""

    @property
    def name(self) -> str:
        """What the score is, for records and the README ("lexical", "embedding+lexical", an NLI model id)."""
        ...

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]: ...


class LexicalSupport:
    """The share of the claim's content words found in the span, times that of its numbers."""

    name = "lexical"

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        return [lexical_support(claim, span) * number_agreement(claim, span) for claim, span in pairs]


class EmbeddingSupport:
    """Mean of the lexical share and the (non-negative) cosine of claim and span embeddings,
    times the share of the claim's numbers found in the span.

    ``embedder`` must be loaded; its vectors are normalised, so the dot product is the cosine.
    """

    name = "embedding+lexical"

    def __init__(self, embedder: Embedder) -> None:
        self._embedder = embedder

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        texts = list(dict.fromkeys(text for pair in pairs for text in pair))
        position = {text: i for i, text in enumerate(texts)}
        vectors = np.asarray(self._embedder.embed_documents(texts), dtype=np.float32)
        scores = []
        for claim, span in pairs:
            cosine = float(vectors[position[claim]] @ vectors[position[span]])
            blended = (lexical_support(claim, span) + max(0.0, min(1.0, cosine))) / 2
            scores.append(blended * number_agreement(claim, span))
        return scores


def entailment_index(id2label: Mapping[Any, str] | None, model_id: str) -> int:
    """The output index of the "entailment" class in a model config's ``id2label``.

    Models order their classes differently (contradiction/entailment/neutral or
    entailment/neutral/contradiction), so the index is read, never assumed. Raises
    :class:`ModelLoadError` when no label names entailment (the model is not an NLI model).
    """
    labels = {int(index): str(label) for index, label in (id2label or {}).items()}
    found = [index for index, label in labels.items() if label.strip().lower().startswith("entail")]
    if len(labels) < 2 or len(found) != 1:
        shown = ", ".join(f"{index}: {label}" for index, label in sorted(labels.items())) or "none"
        raise ModelLoadError(
            f"{model_id!r} is not an NLI model: its labels ({shown}) name no single entailment class; "
            "configure an NLI CrossEncoder such as cross-encoder/nli-deberta-v3-small"
        )
    return found[0]


def load_nli_model(model_id: str, advice: str) -> tuple[Any, int]:
    """A sentence-transformers NLI ``CrossEncoder`` and the index of its entailment class.

    Raises :class:`ModelLoadError` naming the model, the reason and ``advice`` (what to set instead).
    """
    from sentence_transformers import CrossEncoder

    try:
        model = CrossEncoder(model_id)
    except Exception as exc:  # noqa: BLE001 - any failure here means "cannot load"
        raise ModelLoadError(f"NLI model {model_id!r} cannot be loaded: {first_line(exc)}. {advice}") from None
    return model, entailment_index(getattr(model.config, "id2label", None), model_id)


class NliSupport:
    """P(entailment | span, claim) from a sentence-transformers NLI ``CrossEncoder``.

    Cheap to build; :meth:`load` loads the model (raises :class:`ModelLoadError` with what to do).
    """

    def __init__(self, model_id: str, *, batch_size: int = 32) -> None:
        self._model_id = model_id
        self._batch_size = batch_size
        self._model: Any = None
        self._entailment = 0

    @property
    def name(self) -> str:
        return self._model_id

    def load(self) -> None:
        if self._model is None:
            advice = "Set citations.support_model to a local folder or a cached hub id, or leave it unset."
            self._model, self._entailment = load_nli_model(self._model_id, advice)

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        if self._model is None:
            raise RuntimeError("call load() before scoring")
        if not pairs:
            return []
        probabilities: Any = self._model.predict(
            [(span, claim) for claim, span in pairs],
            apply_softmax=True,
            batch_size=self._batch_size,
            show_progress_bar=False,
        )
        return [float(row[self._entailment]) for row in probabilities]
