"""Calibrate ``citations.min_support`` from evaluation runs made with ``--set citations.min_support=0``.

With the threshold at 0 every sentence of every answer keeps its best-supported citation, with
its support recorded in ``samples.jsonl``. Every verdict of :class:`rag.citations.Citer` is
monotone in the threshold (a sentence is verified when its best support reaches it; an answer
abstains when none of its sentences is verified), so the verdicts at any threshold can be read
back from those records without generating again. For each candidate threshold this prints, over
the given runs:

- abstention precision and recall (questions marked unanswerable in the dataset);
- ``cites_gold``: the share of answerable questions with gold pages whose answer keeps a
  supported citation on a gold page;
- ``correct_and_cited``: those whose answer also contains a reference answer.

It picks the threshold with the best mean of abstention F1 (where the runs have unanswerable
questions) and ``cites_gold``: the threshold is chosen on development runs and then confirmed by
a fresh ``rag eval`` on another split at the chosen value (the README says which was which).

    python bench/calibrate_support.py RUN_DIR [RUN_DIR ...]

One approximation, said here because it matters: at threshold 0 a sentence whose own marker
exists is never attributed (its own citation counts as supported), so at a higher threshold the
replay cannot know whether attribution would have found a better passage for it; it counts such
a sentence as unverified. The replay therefore errs towards abstaining.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from eval.metrics import contains_reference
from eval.records import Sample, read_run

# 0.40 .. 0.80. Not lower: the default support is the mean of word overlap and cosine, so below
# 0.40 a span that shares no content word with the claim passes on embedding similarity alone
# (overlap 0, cosine 0.8), and a citation whose quote shares no word with its claim is not one a
# reader can check.
THRESHOLDS = [round(0.05 * step, 2) for step in range(8, 17)]


def replay(sample: Sample, threshold: float) -> tuple[bool, bool, bool]:
    """``(abstained, cites_gold, contains_reference)`` of one answer at ``threshold``."""
    kept = [c for c in sample.citations if (c.support or 0.0) >= threshold]
    gold = {(Path(s.file).name, s.page) for s in sample.gold_sources}
    on_gold = any((Path(c.file).name, c.page) in gold or (Path(c.file).name, None) in gold for c in kept)
    said_unknown = "don't know" in (sample.answer or "").lower()
    abstained = not kept or said_unknown
    contains = contains_reference(" ".join(c.sentence for c in kept), sample.answers) == 1.0
    return abstained, on_gold and not abstained, contains


def sweep(samples: Sequence[Sample]) -> list[dict[str, float | None]]:
    rows = []
    for threshold in THRESHOLDS:
        abstained_on = {"unanswerable": 0, "answerable": 0}
        unanswerable = sum(1 for s in samples if s.unanswerable)
        gold_questions = [s for s in samples if not s.unanswerable and s.gold_sources]
        gold_ids = {s.id for s in gold_questions}
        cites_gold = correct = 0
        for sample in samples:
            abstained, on_gold, contains = replay(sample, threshold)
            if abstained:
                abstained_on["unanswerable" if sample.unanswerable else "answerable"] += 1
            if sample.id in gold_ids:
                cites_gold += on_gold
                correct += on_gold and contains
        total = abstained_on["unanswerable"] + abstained_on["answerable"]
        precision = abstained_on["unanswerable"] / total if total else None
        recall = abstained_on["unanswerable"] / unanswerable if unanswerable else None
        f1 = 2 * precision * recall / (precision + recall) if precision and recall else (0.0 if unanswerable else None)
        rows.append(
            {
                "threshold": threshold,
                "abstention_precision": precision,
                "abstention_recall": recall,
                "abstention_f1": f1,
                "cites_gold": cites_gold / len(gold_questions) if gold_questions else None,
                "correct_and_cited": correct / len(gold_questions) if gold_questions else None,
            }
        )
    return rows


def objective(per_run: Sequence[list[dict[str, float | None]]], index: int) -> float:
    values = []
    for rows in per_run:
        row = rows[index]
        values += [v for v in (row["abstention_f1"], row["cites_gold"]) if v is not None]
    return sum(values) / len(values) if values else 0.0


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders made with citations.min_support=0")
    args = parser.parse_args(argv)
    per_run = []
    for run in args.runs:
        stored = read_run(run)
        info = stored.info
        if info["config"]["citations"]["min_support"] != 0:
            print(f"{run}: made with min_support {info['config']['citations']['min_support']}, not 0", file=sys.stderr)
            return 1
        rows = sweep(stored.samples)
        per_run.append(rows)
        print(f"\n{run} ({info['dataset']['name']}, {info['config']['answer']['citations']})")
        print("| min_support | abstention P | abstention R | abstention F1 | cites_gold | correct_and_cited |")
        print("|---:|---:|---:|---:|---:|---:|")
        for row in rows:
            cells = [f"{row['threshold']:.2f}"] + [
                _fmt(row[key])
                for key in (
                    "abstention_precision",
                    "abstention_recall",
                    "abstention_f1",
                    "cites_gold",
                    "correct_and_cited",
                )
            ]
            print("| " + " | ".join(cells) + " |")
    best = max(range(len(THRESHOLDS)), key=lambda i: (objective(per_run, i), -THRESHOLDS[i]))
    score = objective(per_run, best)
    print(f"\nbest threshold: {THRESHOLDS[best]:.2f} (mean of abstention F1 and cites_gold: {score:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
