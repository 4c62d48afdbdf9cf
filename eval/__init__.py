"""Offline evaluation: the product's pipeline run over a question set, scored, and compared.

``rag eval`` loads a dataset (:mod:`eval.datasets`: the project's own JSONL, BEIR, FinanceBench),
runs it through the same stages as ``rag ask``, batched (:mod:`eval.runner`), scores every
question (:mod:`eval.metrics`, :mod:`eval.scoring`, with a pluggable support judge from
:mod:`eval.judges`), and writes a run folder (:mod:`eval.records`): ``samples.jsonl``,
``metrics.json`` with bootstrap intervals (:mod:`eval.stats`), ``report.html`` and a TREC run
(:mod:`eval.report`). ``rag eval compare`` pairs two runs question by question (:mod:`eval.compare`).
"""
