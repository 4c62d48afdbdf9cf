"""Support judges for the citation metrics and faithfulness: who decides that passages entail a claim.

Three implementations of :class:`eval.metrics.SupportJudge`, picked by ``eval.judge``:

- ``overlap`` (default): :class:`eval.metrics.OverlapJudge`, the local word-overlap check of
  ``rag ask``. Instant and offline; it checks words, not meaning.
- ``nli``: :class:`NliJudge`, a sentence-transformers ``CrossEncoder`` trained for natural
  language inference (``eval.judge_model``, e.g. ``cross-encoder/nli-deberta-v3-small``): the
  passages are the premise, the claim the hypothesis, as ALCE's AutoAIS does with T5.
- ``llm``: :class:`LlmJudge`, a model behind an OpenAI-compatible server (``eval.judge_base_url``,
  ``eval.judge_model``, and ``eval.judge_api_key`` when the server needs one) asked through
  LangChain's ``ChatOpenAI`` to answer yes or no.

:func:`build_judge` makes the configured one ready to use (it loads the NLI model). Both model
judges remember their verdicts, since the metrics ask about the same sentence and passage
several times (citation recall and precision, then faithfulness).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from eval.metrics import OverlapJudge, SupportJudge
from rag.config import EvalConfig
from rag.errors import RagError, first_line
from rag.generator import bearer_key
from rag.support import entailment_index, load_nli_model

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from pydantic import SecretStr
    from sentence_transformers import CrossEncoder

log = logging.getLogger(__name__)

__all__ = [
    "JudgeError",
    "LlmJudge",
    "NliJudge",
    "OverlapJudge",
    "build_judge",
    "describe_judge",
    "entailment_index",
    "judge_messages",
    "parse_verdict",
]

# Verdicts remembered per judge: a run asks a few dozen questions per answer.
_MEMO_SIZE = 16_384


class JudgeError(RagError):
    """A model judge could not give a verdict (its server is down or answered with an error)."""


def build_judge(config: EvalConfig) -> SupportJudge:
    """The judge ``config.judge`` names, ready to use: an NLI model is loaded here.

    Raises :class:`rag.errors.ModelLoadError` when the NLI model cannot be loaded. The LLM
    judge contacts its server only when first asked.
    """
    if config.judge == "overlap":
        return OverlapJudge(config.support_threshold)
    if config.judge == "nli":
        assert config.judge_model is not None  # EvalConfig's validator
        judge = NliJudge(config.judge_model, config.support_threshold)
        judge.load()
        return judge
    assert config.judge_model is not None and config.judge_base_url is not None
    return LlmJudge(config.judge_model, config.judge_base_url, api_key=config.judge_api_key)


def describe_judge(config: EvalConfig) -> str:
    """One line naming the judge and its model, for ``metrics.json`` and the report."""
    if config.judge == "overlap":
        return f"overlap (content words, threshold {config.support_threshold:g})"
    if config.judge == "nli":
        return f"nli {config.judge_model} (entailment probability >= {config.support_threshold:g})"
    return f"llm {config.judge_model} at {config.judge_base_url}"


# ---------------------------------------------------------------------------------------------
# NLI cross-encoder


class NliJudge:
    """An NLI cross-encoder: supported when P(entailment | passages, claim) >= ``threshold``.

    The passages are joined into one premise (ALCE's AutoAIS); the model truncates a premise
    longer than its input, so with many long cited passages the last ones may go unread.
    Cheap to build; :meth:`load` loads the model.
    """

    def __init__(self, model_id: str, threshold: float = 0.5, *, batch_size: int = 16) -> None:
        self._model_id = model_id
        self._threshold = threshold
        self._batch_size = batch_size
        self._model: CrossEncoder | None = None
        self._entailment = 0
        self._memo = functools.lru_cache(maxsize=_MEMO_SIZE)(self._probability)

    @property
    def model_id(self) -> str:
        return self._model_id

    def load(self) -> None:
        """Load the model and find its entailment class. Raises :class:`ModelLoadError` with what to do."""
        if self._model is None:
            advice = "Set eval.judge_model to a local folder or a cached hub id, or use eval.judge=overlap."
            self._model, self._entailment = load_nli_model(self._model_id, advice)

    def entailment_probability(self, claim: str, passages: Sequence[str]) -> float:
        """P(entailment) of ``claim`` given the passages joined (0.0 when there is no passage)."""
        if not passages:
            return 0.0
        return self._memo(claim, tuple(passages))

    def supports(self, claim: str, passages: Sequence[str]) -> bool:
        return self.entailment_probability(claim, passages) >= self._threshold

    def _probability(self, claim: str, passages: tuple[str, ...]) -> float:
        if self._model is None:
            raise RuntimeError("call load() before using the NLI judge")
        premise = "\n\n".join(passages)
        probabilities: Any = self._model.predict(
            [(premise, claim)], apply_softmax=True, batch_size=self._batch_size, show_progress_bar=False
        )
        return float(probabilities[0][self._entailment])


# ---------------------------------------------------------------------------------------------
# LLM judge

JUDGE_SYSTEM_PROMPT = (
    "You check claims against sources. Given numbered passages and a claim, decide whether the "
    "passages, taken together, entail the claim: everything the claim states must follow from them. "
    "Reply with one word: yes or no."
)

_THINKING = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FIRST_WORD = re.compile(r"^[\W_]*(yes|no)\b")
_VERDICT_WORD = re.compile(r"\b(yes|no)\b")


def judge_messages(claim: str, passages: Sequence[str]) -> list[dict[str, str]]:
    """The chat messages that ask whether ``passages`` entail ``claim``."""
    body = "\n\n".join(f"[{n}] {text}" for n, text in enumerate(passages, start=1))
    question = f"Passages:\n\n{body}\n\nClaim: {claim}\n\nDo the passages entail the claim? Answer yes or no."
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": question}]


def parse_verdict(reply: str) -> bool | None:
    """``True`` for yes, ``False`` for no, ``None`` when the reply says neither or both.

    Reads the first word ("Yes.", "**No**", "yes, because ..."); failing that, the one of the
    words yes/no that occurs alone in the reply. A reasoning model's ``<think>`` block is
    skipped.
    """
    text = _THINKING.sub(" ", reply).strip().lower()
    first = _FIRST_WORD.match(text)
    if first:
        return first.group(1) == "yes"
    words = set(_VERDICT_WORD.findall(text))
    if len(words) == 1:
        return words.pop() == "yes"
    return None


class LlmJudge:
    """A chat model behind an OpenAI-compatible server, asked whether the passages entail the claim.

    A reply that is neither yes nor no counts as "not supported" and is counted in
    :attr:`unparsed`. ``api_key`` is sent as ``Authorization: Bearer <key>``; without one the
    server must need none (vLLM on loopback). Building it contacts nothing; ``chat`` replaces the
    client (tests).
    Raises :class:`JudgeError` when the server does not answer.
    """

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: SecretStr | None = None,
        timeout_s: float = 120.0,
        chat: BaseChatModel | None = None,
    ) -> None:
        self._model = model
        self._base_url = base_url
        if chat is None:
            from langchain_openai import ChatOpenAI

            chat = ChatOpenAI(
                model=model,
                base_url=base_url,
                api_key=bearer_key(api_key),
                temperature=0.0,
                max_completion_tokens=16,
                timeout=timeout_s,
                max_retries=1,
            )
        self._chat = chat
        self.unparsed = 0
        self._memo = functools.lru_cache(maxsize=_MEMO_SIZE)(self._verdict)

    @property
    def model_id(self) -> str:
        return self._model

    def supports(self, claim: str, passages: Sequence[str]) -> bool:
        if not passages:
            return False
        return self._memo(claim, tuple(passages))

    def _verdict(self, claim: str, passages: tuple[str, ...]) -> bool:
        try:
            reply = self._chat.invoke(judge_messages(claim, passages))
        except Exception as exc:  # noqa: BLE001 - the client raises many transport types
            detail = first_line(exc)
            raise JudgeError(
                f"the LLM judge {self._model!r} at {self._base_url} did not answer ({detail}); "
                "check eval.judge_base_url, eval.judge_api_key and that the server is running, "
                "or use eval.judge=overlap"
            ) from None
        text = reply.content if isinstance(reply.content, str) else str(reply.content)
        verdict = parse_verdict(text)
        if verdict is None:
            self.unparsed += 1
            log.warning("LLM judge reply is neither yes nor no, counted as unsupported: %r", text[:200])
            return False
        return verdict
