"""How well follow-up classification and persona derivation recover the truth.

* :func:`evaluate_followups_testbed`: precision / recall / F1 per class on both axes, confusion matrices and
  feedback-span agreement against a testbed's truth (by default the default testbed, seed 0, which the
  offline classifier never trains on: it trains on seed 1001).
* :func:`evaluate_followups_oasst`: the same against the hand-labelled OpenAssistant follow-ups
  (``tests/rlhi/fixtures/oasst_followups.jsonl``: message ids, labels and span offsets; the text is read
  from the shared OASST trees), plus the population statistics of the classifier's labels on every
  OASST follow-up.
* :func:`cross_validate_handmade`: the same on the hand-made development set, each fold scored by a model
  trained without it (folds by exchange, so no previous exchange is in both).
* :func:`evaluate_personas`: per-field accuracy of derived personas against the testbed's true personas,
  next to the majority-class baseline, and the population shares RLHI reports for WildChat.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from userloop.data.readers import read_conversations
from userloop.errors import UserError
from userloop.files import read_user_lines
from userloop.rlhi.build import BuildConfig, derive_personas, followup_counts
from userloop.rlhi.followup_classifier import fit_followup_heads, testbed_examples
from userloop.rlhi.followups import FollowUp, FollowUpClassifier, Labels, extract_followups
from userloop.rlhi.taxonomy import FEEDBACK_TYPES, RELATIONS, TESTBED_FEEDBACK_TYPE, TESTBED_RELATION, validate_labels
from userloop.testbed import generate, read_truth
from userloop.testbed.population import truth_folder

# RLHI's persona statistics on WildChat (share of users preferring each), for comparison.
PAPER_PERSONA_SHARES = {"expertise=expert": 0.598, "detail=detailed": 0.499, "tone=formal": 0.845, "structure=structured": 0.771}
OASST_TREES = "en_100_tree.jsonl"


def classification_table(truth: Sequence[str], predicted: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    """Precision, recall, F1 and support per class, accuracy, macro F1 (over classes present) and the confusion
    matrix (truth -> predicted -> count)."""
    confusion: dict[str, Counter] = {c: Counter() for c in classes}
    for t, p in zip(truth, predicted, strict=True):
        confusion[t][p] += 1
    per_class = {}
    for c in classes:
        tp = confusion[c][c]
        predicted_c = sum(confusion[t][c] for t in classes)
        support = sum(confusion[c].values())
        precision = tp / predicted_c if predicted_c else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[c] = {"precision": round(precision, 3), "recall": round(recall, 3), "f1": round(f1, 3),
                        "support": support, "predicted": predicted_c}
    present = [c for c in classes if per_class[c]["support"]]
    return {"per_class": per_class, "accuracy": round(sum(confusion[c][c] for c in classes) / max(1, len(truth)), 3),
            "macro_f1": round(sum(per_class[c]["f1"] for c in present) / max(1, len(present)), 3),
            "n": len(truth), "confusion": {t: dict(confusion[t].most_common()) for t in classes if confusion[t]}}


def _token_f1(a: str, b: str) -> float:
    ta, tb = Counter(a.lower().split()), Counter(b.lower().split())
    common = sum((ta & tb).values())
    if not common:
        return 0.0
    precision, recall = common / sum(tb.values()), common / sum(ta.values())
    return 2 * precision * recall / (precision + recall)


def span_agreement(truth: Sequence[str | None], predicted: Sequence[str | None]) -> dict[str, Any]:
    """Over turns whose true span is not null: exact matches and mean token F1 (a missing prediction scores 0)."""
    pairs = [(t, p) for t, p in zip(truth, predicted, strict=True) if t]
    if not pairs:
        return {"n": 0}
    return {"n": len(pairs), "exact": round(sum(t == p for t, p in pairs) / len(pairs), 3),
            "token_f1": round(sum(_token_f1(t, p) if p else 0.0 for t, p in pairs) / len(pairs), 3)}


def _report(truth: Sequence[Labels], predicted: Sequence[Labels]) -> dict[str, Any]:
    return {"relation": classification_table([t.relation for t in truth], [p.relation for p in predicted], RELATIONS),
            "feedback_type": classification_table([t.feedback_type for t in truth], [p.feedback_type for p in predicted], FEEDBACK_TYPES),
            "feedback_span": span_agreement([t.feedback_text for t in truth], [p.feedback_text for p in predicted])}


def testbed_followups(data: Path) -> tuple[list[FollowUp], list[Labels]]:
    """The follow-ups of a testbed folder (raw or prepared) with their true labels."""
    folder = truth_folder(data)
    if folder is None:
        raise UserError(f"{data}: no testbed truth (truth.jsonl) found for it")
    _, truth = read_truth(folder)
    followups, labels = [], []
    for conversation in read_conversations([str(data)]):
        turns = truth[conversation.id]["turns"]
        for followup in extract_followups(conversation):
            t = turns[followup.index]
            followups.append(followup)
            labels.append(Labels(TESTBED_RELATION[t["relation"]], TESTBED_FEEDBACK_TYPE[t["feedback_type"]], t["feedback_text"]))
    return followups, labels


def evaluate_followups_testbed(classifier: FollowUpClassifier, data: Path) -> dict[str, Any]:
    followups, truth = testbed_followups(data)
    return _report(truth, classifier.classify(followups))


def read_oasst_labels(labels_path: Path, oasst_dir: Path) -> tuple[list[FollowUp], list[Labels]]:
    """The hand-labelled follow-ups with their text from the shared trees; the span comes from its offsets."""
    by_id = _by_message_id(oasst_dir)
    followups, labels = [], []
    for number, line in read_user_lines(labels_path, "--real-labels file"):
        try:
            row = orjson.loads(line)
            followup = by_id.get(row["message_id"])
            error = validate_labels(row["relation"], row["feedback_type"])
            start, end = row["feedback_span_start"], row["feedback_span_end"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as err:
            raise UserError(f"{labels_path}:{number}: not a label row (message_id, relation, feedback_type, "
                            f"feedback_span_start, feedback_span_end): {err}") from None
        if followup is None or error:
            raise UserError(f"{labels_path}:{number}: " + (error or f"message {row['message_id']} is not a follow-up in {oasst_dir}"))
        span = followup.text[start:end] if start is not None else None
        followups.append(followup)
        labels.append(Labels(row["relation"], row["feedback_type"], span))
    return followups, labels


def _by_message_id(oasst_dir: Path) -> dict[str, FollowUp]:
    """Every follow-up of the shared OASST trees by message id (threads of a tree share their beginnings)."""
    if not (oasst_dir / OASST_TREES).is_file():
        raise UserError(f"no OASST trees at {oasst_dir / OASST_TREES}")
    out: dict[str, FollowUp] = {}
    for conversation in read_conversations([str(oasst_dir / OASST_TREES)]):
        for followup in extract_followups(conversation):
            out.setdefault(conversation.messages[followup.index].extra["message_id"], followup)
    return out


def evaluate_followups_oasst(classifier: FollowUpClassifier, labels_path: Path, oasst_dir: Path) -> dict[str, Any]:
    """Scores on the hand-labelled set and the classifier's population statistics on all OASST follow-ups."""
    followups, truth = read_oasst_labels(labels_path, oasst_dir)
    report = _report(truth, classifier.classify(followups))
    conversations = [c for c in read_conversations([str(oasst_dir / OASST_TREES)]) if not c.extra.get("synthetic")]
    everything = [f for c in conversations for f in extract_followups(c)]
    report["population"] = followup_counts(conversations, list(zip(everything, classifier.classify(everything), strict=True)))
    report["population"]["note"] = "threads (root-to-leaf paths) count as conversations; the OASST export has no user ids"
    report["truth_population"] = {"relation": dict(Counter(t.relation for t in truth).most_common()),
                                  "feedback_type": dict(Counter(t.feedback_type for t in truth).most_common())}
    return report


def cross_validate_handmade(population, handmade: tuple[Sequence[FollowUp], Sequence[Labels]],
                            folds: int = 5) -> dict[str, Any]:
    """Scores on the hand-made set, each example predicted by follow-up heads trained on ``population``
    plus the other folds. Folds group the examples by previous exchange (the id before ``-``)."""
    followups, labels = list(handmade[0]), list(handmade[1])
    exchanges = sorted({f.conversation_id.split("-")[0] for f in followups})
    fold_of = {exchange: i % folds for i, exchange in enumerate(exchanges)}
    base_followups, base_labels, _, _ = testbed_examples(population)
    predicted: list[Labels | None] = [None] * len(followups)
    for fold in range(folds):
        held = [i for i, f in enumerate(followups) if fold_of[f.conversation_id.split("-")[0]] == fold]
        kept = [i for i, f in enumerate(followups) if fold_of[f.conversation_id.split("-")[0]] != fold]
        model = fit_followup_heads(base_followups + [followups[i] for i in kept], base_labels + [labels[i] for i in kept],
                                   [False] * len(base_followups) + [True] * len(kept), f"fold {fold}")
        for i, label in zip(held, model.classify([followups[i] for i in held]), strict=True):
            predicted[i] = label
    return {**_report(labels, predicted), "folds": folds}


def evaluate_personas(personas: Sequence[dict[str, Any]], true_users: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-field accuracy of derived personas (``personas.jsonl`` rows) against the true personas."""
    rows = [(p, true_users[p["user_id"]]["persona"]) for p in personas if p["user_id"] in true_users]
    if not rows:
        raise UserError("no derived persona belongs to a user of the testbed truth")
    fields: dict[str, Any] = {}
    for name in ("expertise", "detail", "tone", "structure"):
        truth = [t[name] for _, t in rows]
        majority, count = Counter(truth).most_common(1)[0]
        fields[name] = {"accuracy": round(sum(p[name] == t[name] for p, t in rows) / len(rows), 3),
                        "majority_baseline": round(count / len(rows), 3), "majority_class": majority}
    jaccard = [len(set(p["domains"]) & set(t["domains"])) / len(set(p["domains"]) | set(t["domains"])) for p, t in rows]
    fields["domains"] = {"exact_set": round(sum(set(p["domains"]) == set(t["domains"]) for p, t in rows) / len(rows), 3),
                         "mean_jaccard": round(sum(jaccard) / len(rows), 3)}
    shares = {}
    for key, paper in PAPER_PERSONA_SHARES.items():
        name, value = key.split("=")
        shares[key] = {"derived": round(sum(p[name] == value for p, _ in rows) / len(rows), 3),
                       "truth": round(sum(t[name] == value for _, t in rows) / len(rows), 3),
                       "paper_wildchat": paper}
    return {"users": len(rows), "fields": fields, "population_shares": shares}


def evaluate(data: Path, real_labels: Path | None = None, oasst_dir: Path | None = None,
             min_conversations: int = 3) -> dict[str, Any]:
    """Everything ``userloop rlhi evaluate`` prints: the offline classifier on the testbed ``data`` (and on
    the hand-labelled OASST set when given), and offline personas of ``data``'s users against the truth."""
    import tempfile

    from userloop.rlhi.followup_classifier import TRAIN_SEED, TRAIN_USERS, load_offline, read_handmade

    if real_labels is not None and oasst_dir is None:
        raise UserError("--real-labels needs --oasst (the folder of the OASST trees)")
    if real_labels is not None:
        read_user_lines(real_labels, "--real-labels file")  # an unreadable file fails before the slow part
    classifier = load_offline()
    report: dict[str, Any] = {"classifier_trained_on": classifier.trained_on, "data": str(data),
                              "testbed": evaluate_followups_testbed(classifier, data),
                              "handmade_cv": cross_validate_handmade(generate(TRAIN_USERS, TRAIN_SEED), read_handmade())}
    if real_labels is not None:
        report["oasst"] = evaluate_followups_oasst(classifier, real_labels, oasst_dir)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "personas.jsonl"
        derive_personas(data, path, BuildConfig(min_conversations=min_conversations))
        personas = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    users, _ = read_truth(truth_folder(data))
    report["personas"] = evaluate_personas(personas, users)
    return report
