"""The rule-based findings labeler (negation, uncertainty, attributes) and findings P/R/F1 on hand labels."""

from __future__ import annotations

import pytest

from biomedgpt.eval.metrics.findings import OBSERVATIONS, findings_prf, label_report


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        # negation, a list under one cue
        ("No pleural effusion or pneumothorax.", {"Pleural Effusion": 0, "Pneumothorax": 0, "No Finding": 1}),
        ("There is no evidence of pneumonia.", {"Pneumonia": 0, "No Finding": 1}),
        ("Negative for pneumothorax. Free of effusion.", {"Pneumothorax": 0, "Pleural Effusion": 0}),
        ("No displaced rib fracture.", {"Fracture": 0}),
        ("Resolved pneumothorax.", {"Pneumothorax": 0}),
        # positives
        ("There is a small left pleural effusion.", {"Pleural Effusion": 1, "No Finding": 0}),
        ("Calcified granuloma. Old healed rib fractures.", {"Lung Lesion": 1, "Fracture": 1}),
        ("Sternotomy wires and a pacemaker are in place.", {"Support Devices": 1}),
        # uncertainty, before and after the mention
        ("Possible right lower lobe pneumonia.", {"Pneumonia": -1, "No Finding": 0}),
        ("Atelectasis cannot be excluded.", {"Atelectasis": -1}),
        ("Cannot exclude small pneumothorax.", {"Pneumothorax": -1}),
        ("Findings suggestive of pneumonia.", {"Pneumonia": -1}),
        ("Pleural effusion is not excluded.", {"Pleural Effusion": -1}),
        ("Borderline cardiomegaly.", {"Cardiomegaly": -1}),
        # attributes of anatomical terms
        ("Heart size is normal.", {"Cardiomegaly": 0, "No Finding": 1}),
        ("The heart is mildly enlarged.", {"Cardiomegaly": 1}),
        ("The heart is not enlarged.", {"Cardiomegaly": 0}),
        ("Heart size may be enlarged.", {"Cardiomegaly": -1}),
        ("No enlargement of the cardiac silhouette.", {"Cardiomegaly": 0}),
        ("Enlarged cardiac silhouette.", {"Cardiomegaly": 1}),
        (
            "Heart size and mediastinal contours are normal.",
            {"Cardiomegaly": 0, "Enlarged Cardiomediastinum": 0},
        ),
        (
            "The mediastinum is widened, heart size normal.",
            {"Enlarged Cardiomediastinum": 1, "Cardiomegaly": 0},
        ),
        ("Costophrenic angles are sharp.", {"Pleural Effusion": 0}),
        ("Blunting of the left costophrenic angle.", {"Pleural Effusion": 1}),
        ("Pulmonary vascularity is within normal limits.", {"Edema": 0}),
        # clear lungs: Lung Opacity negative, and with nothing positive the study is normal
        ("The lungs are clear.", {"Lung Opacity": 0, "No Finding": 1}),
        ("No acute cardiopulmonary process.", {"No Finding": 1}),
    ],
)
def test_label_single_statements(report: str, expected: dict[str, int]) -> None:
    labels = label_report(report)
    for observation, status in expected.items():
        assert labels.get(observation) == status, (observation, labels)


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        # negation scope ends at "but ... there is", at a new predicate, not at list commas
        ("No pneumothorax, but there is a small right effusion.", {"Pneumothorax": 0, "Pleural Effusion": 1}),
        ("No pleural effusion and the heart is enlarged.", {"Pleural Effusion": 0, "Cardiomegaly": 1}),
        ("Effusion is present and pneumothorax is not seen.", {"Pleural Effusion": 1, "Pneumothorax": 0}),
        (
            "The effusion has resolved and the pneumothorax is unchanged.",
            {"Pleural Effusion": 0, "Pneumothorax": 1},
        ),
        (
            "The lungs are clear without focal consolidation, effusion, or pneumothorax.",
            {"Lung Opacity": 0, "Consolidation": 0, "Pleural Effusion": 0, "Pneumothorax": 0},
        ),
        # nearest cue wins
        ("Possible small effusion, no pneumothorax.", {"Pleural Effusion": -1, "Pneumothorax": 0}),
        (
            "Patchy opacity which may represent atelectasis or pneumonia.",
            {"Lung Opacity": 1, "Atelectasis": -1, "Pneumonia": -1},
        ),
        ("Atelectasis vs. pneumonia at the left base.", {"Atelectasis": -1, "Pneumonia": -1}),
        # "no change" is no negation
        ("No change in the left pleural effusion.", {"Pleural Effusion": 1}),
        # positive beats negative across sentences
        (
            "Left lower lobe consolidation, likely pneumonia. The lungs are otherwise clear.",
            {"Consolidation": 1, "Pneumonia": -1, "Lung Opacity": 0, "No Finding": 0},
        ),
        ("The chest tube has been removed. Endotracheal tube is in place.", {"Support Devices": 1}),
        ("The chest tube has been removed.", {"Support Devices": 0}),
        (
            "No acute cardiopulmonary abnormality. Small left effusion.",
            {"No Finding": 0, "Pleural Effusion": 1},
        ),
    ],
)
def test_label_scope_and_aggregation(report: str, expected: dict[str, int]) -> None:
    labels = label_report(report)
    for observation, status in expected.items():
        assert labels.get(observation) == status, (observation, labels)


def test_look_alikes_and_unrelated_text_give_no_labels() -> None:
    assert label_report("Small pericardial effusion.") == {}
    assert label_report("Mass effect on the trachea.") == {}
    assert label_report("Comparison is made to the prior study.") == {}
    assert label_report("") == {}


def test_support_devices_do_not_affect_no_finding() -> None:
    labels = label_report("Heart size is normal. Endotracheal tube in place.")
    assert labels == {"No Finding": 1, "Cardiomegaly": 0, "Support Devices": 1}


def test_labels_are_in_observation_order() -> None:
    labels = label_report("Small effusion. Mild cardiomegaly. Endotracheal tube in place.")
    assert list(labels) == [o for o in OBSERVATIONS if o in labels]
    assert len(OBSERVATIONS) == 14


# Hand-labelled set. Labeler output (checked in test_hand_labels):
#   1 pred {PE 1, PTX 0, NF 0}            ref {PE 1, CM 1, NF 0}
#   2 pred {LO 0, PE 0, NF 1}             ref {NF 1}
#   3 pred {Pneumonia -1, NF 0}           ref {Pneumonia 1, NF 0}
#   4 pred {CM 1, SD 1, NF 0}             ref {CM 0, SD 1, NF 1}
PREDICTIONS = [
    "Small left pleural effusion. No pneumothorax.",
    "The lungs are clear. No pleural effusion.",
    "Possible right lower lobe pneumonia.",
    "Mild cardiomegaly. Endotracheal tube in place.",
]
REFERENCES = [
    "Small left pleural effusion and mild cardiomegaly.",
    "No acute cardiopulmonary process.",
    "Right lower lobe pneumonia.",
    "Heart size is normal. Endotracheal tube in place.",
]


def test_hand_labels() -> None:
    assert label_report(PREDICTIONS[0]) == {"No Finding": 0, "Pneumothorax": 0, "Pleural Effusion": 1}
    assert label_report(REFERENCES[0]) == {"No Finding": 0, "Cardiomegaly": 1, "Pleural Effusion": 1}
    assert label_report(PREDICTIONS[1]) == {"No Finding": 1, "Lung Opacity": 0, "Pleural Effusion": 0}
    assert label_report(REFERENCES[1]) == {"No Finding": 1}
    assert label_report(PREDICTIONS[2]) == {"No Finding": 0, "Pneumonia": -1}
    assert label_report(REFERENCES[2]) == {"No Finding": 0, "Pneumonia": 1}
    assert label_report(PREDICTIONS[3]) == {"No Finding": 0, "Cardiomegaly": 1, "Support Devices": 1}
    assert label_report(REFERENCES[3]) == {"No Finding": 1, "Cardiomegaly": 0, "Support Devices": 1}


def test_findings_prf_uncertain_as_positive() -> None:
    # TP: PE(1), NF(2), Pneumonia(3), SD(4) = 4; FP: CM(4) = 1; FN: CM(1), NF(4) = 2
    scores = findings_prf(PREDICTIONS, REFERENCES)
    assert scores["micro_precision"] == pytest.approx(4 / 5)
    assert scores["micro_recall"] == pytest.approx(4 / 6)
    assert scores["micro_f1"] == pytest.approx(8 / 11)  # 2TP / (2TP + FP + FN)
    # active findings PE (1,1,1), CM (0,0,0), NF (1, 1/2, 2/3), Pneumonia (1,1,1), SD (1,1,1)
    assert scores["macro_precision"] == pytest.approx(4 / 5)
    assert scores["macro_recall"] == pytest.approx(3.5 / 5)
    assert scores["macro_f1"] == pytest.approx((3 + 2 / 3) / 5)
    per = scores["per_finding"]
    assert {k: per["Cardiomegaly"][k] for k in ("tp", "fp", "fn", "support")} == {
        "tp": 0,
        "fp": 1,
        "fn": 1,
        "support": 1,
    }
    assert {k: per["No Finding"][k] for k in ("tp", "fp", "fn", "support")} == {
        "tp": 1,
        "fp": 0,
        "fn": 1,
        "support": 2,
    }
    assert per["No Finding"]["f1"] == pytest.approx(2 / 3)
    assert per["Edema"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "tp": 0,
        "fp": 0,
        "fn": 0,
        "support": 0,
    }
    assert set(per) == set(OBSERVATIONS)


def test_findings_prf_uncertain_ignored() -> None:
    # the hedged pneumonia of prediction 3 no longer counts: TP 3, FP 1, FN 3
    scores = findings_prf(PREDICTIONS, REFERENCES, uncertain="ignore")
    assert scores["micro_precision"] == pytest.approx(3 / 4)
    assert scores["micro_recall"] == pytest.approx(3 / 6)
    assert scores["micro_f1"] == pytest.approx(6 / 10)
    assert scores["macro_precision"] == pytest.approx(3 / 5)
    assert scores["macro_recall"] == pytest.approx(2.5 / 5)
    assert scores["macro_f1"] == pytest.approx((2 + 2 / 3) / 5)


def test_findings_prf_perfect_match() -> None:
    scores = findings_prf(REFERENCES, REFERENCES)
    assert scores["micro_f1"] == pytest.approx(1.0)
    assert scores["macro_f1"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("predictions", "references", "kwargs", "message"),
    [
        (["a"], ["a", "b"], {}, "length mismatch"),
        ([], [], {}, "empty"),
        (["a"], [None], {}, "must be a string"),
        (["a"], ["a"], {"uncertain": "negative"}, "uncertain must be"),
    ],
)
def test_findings_prf_invalid_inputs(predictions, references, kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        findings_prf(predictions, references, **kwargs)


def test_label_report_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        label_report(None)  # type: ignore[arg-type]
