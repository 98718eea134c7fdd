import pytest

from userloop.conversation import Conversation, Message
from userloop.errors import UserError
from userloop.metrics.naturalness import (
    Detector,
    TrainedDetector,
    cached_detector,
    import_detector,
    labelled_turns,
    naturalness,
    train_detector,
)

USER = ["hey whats the capital of peru", "pls make it shorter lol", "ok thx", "can u fix my code its broken",
        "wait no i meant the other one", "idk just give me ideas", "make it rhyme", "is that right??"]
ASSISTANT = ["Certainly! The capital of Peru is Lima, which is also its largest city.",
             "Of course! Here is a shorter version of the text, keeping the key points intact.",
             "You're welcome! Let me know if there is anything else I can help you with.",
             "Sure! The issue in your code is an off-by-one error in the loop. Here is the corrected version:",
             "I apologize for the confusion. Here is the information about the other option you mentioned.",
             "Here are some ideas you might consider: 1. A themed dinner party. 2. A hiking trip. 3. A movie night.",
             "Certainly! Here is a rhyming version of the poem, with a consistent AABB rhyme scheme throughout.",
             "Yes, that is correct. To summarize, the answer follows from the steps outlined above."]


def _conversations(repeat: int = 6) -> list[Conversation]:
    out = []
    for r in range(repeat):
        for i, (u, a) in enumerate(zip(USER, ASSISTANT)):
            out.append(Conversation([Message("user", u), Message("assistant", a)], id=f"{r}-{i}"))
    return out


@pytest.fixture(scope="module")
def detector() -> TrainedDetector:
    return train_detector(_conversations(), _conversations(1), trained_on="hand-made")


def test_labelled_turns_are_balanced():
    _texts, labels = labelled_turns(_conversations(1) + [Conversation([Message("user", "one more")])])
    assert labels.count(1) == labels.count(0) == len(ASSISTANT)


def test_detector_tells_user_turns_from_assistant_turns(detector):
    assert isinstance(detector, Detector)
    assert detector.heldout_accuracy == 100.0 and detector.heldout_examples == 16
    human, model = detector.p_human(["hey pls fix it lol", "Certainly! Here is the corrected version:"])
    assert human > 0.5 > model
    assert naturalness(detector, ["ok thx", "idk"]) > naturalness(detector, ["Certainly! Here are some ideas:"])


def test_naturalness_checks_the_detector_output():
    class Broken:
        def p_human(self, texts):
            return [2.0 for _ in texts]

    with pytest.raises(UserError):
        naturalness(Broken(), ["a"])
    assert naturalness(type("Half", (), {"p_human": lambda self, texts: [0.5] * len(texts)})(), ["a", "b"]) == 50.0


def test_detector_without_both_kinds_of_turn_is_a_user_error():
    with pytest.raises(UserError, match="user and assistant turns"):
        train_detector([Conversation([Message("user", "only users here")])])


def test_cached_detector_is_trained_once(tmp_path):
    from userloop.conversation import write_parquet

    data = tmp_path / "prepared"
    data.mkdir()
    write_parquet(_conversations(), data / "train.parquet")
    first = cached_detector(data, _conversations(), _conversations(1), "test", cache=tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "naturalness").glob("*.pkl"))) == 1
    again = cached_detector(data, [], [], "test", cache=tmp_path / "cache")  # read back, not retrained
    assert again.heldout_accuracy == first.heldout_accuracy and again.train_examples == first.train_examples


class ConstantDetector:
    def p_human(self, texts):
        return [0.25] * len(texts)


def make_detector():
    return ConstantDetector()


def test_import_detector_takes_an_object_or_a_factory():
    assert import_detector(f"{__name__}:make_detector").p_human(["x"]) == [0.25]
    with pytest.raises(UserError):
        import_detector("no_such_module_here:thing")
    with pytest.raises(UserError):
        import_detector("not-a-spec")


class _Recording:
    def __init__(self) -> None:
        self.asked = []

    def p_human(self, texts):
        self.asked += texts
        return [0.9] * len(texts)


def test_empty_texts_score_zero_without_asking_the_detector():
    detector = _Recording()
    assert naturalness(detector, ["hey there", "", "   "]) == pytest.approx(30.0)
    assert detector.asked == ["hey there"]
    assert naturalness(detector, ["", ""]) == 0.0
