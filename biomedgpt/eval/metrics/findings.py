"""Clinical findings of radiology reports: a rule-based, negation-aware labeler and findings P/R/F1.

Report generation is scored on what a report says, not only on its n-grams ("clinical efficacy", Chen et al.
2020; CheXpert labeler, Irvin et al. 2019; NegBio, Peng et al. 2018). This labeler is our own small rule set
in that spirit, with no parser:

1. Text is lower-cased, hyphens become spaces, and it is split into sentences at `.` (not between digits),
   `!`, `?` and newlines.
2. Mentions of the 14 CheXpert observations are found with synonym lists (`_MENTIONS`). Some findings are
   stated as an attribute of an anatomical term (`_ATTRIBUTES`): "heart size is normal", "enlarged cardiac
   silhouette", "costophrenic angles are sharp". Such a term counts only with a qualifier right before it
   or after it within a few words: abnormal (positive), borderline (uncertain) or normal (negative). Where
   matches overlap, the longest wins; a few look-alikes ("pericardial effusion", "mass effect") block.
3. Each mention is negative or uncertain when a cue governs it. A pre-cue ("no", "without", "negative for",
   "free of", "clear of", "resolved", "rule out", "may", "possible", "cannot exclude", "suggestive of", ...)
   governs the mentions after it up to the end of its clause. A clause ends at `;` or `:`, at "but",
   "however", "although", "which", "there is", "except" and the like, at a comma followed by "there"/"the"/
   "this"/"it"/..., and at a finite "is/are/was/were/has/have" (a new predicate); a comma or "or" inside
   a list does not end it ("no effusion, pneumothorax or consolidation"). A post-cue ("is not seen", "has
   resolved", "has been removed", "cannot be excluded", "is possible") governs the mentions just before it
   when only connectives ("and", "or", "the", "left", ...) stand between. The nearest pre-cue wins; without
   one, the nearest post-cue. Uncertainty phrases are matched first, so "cannot exclude" is not a negation;
   "no change"/"no interval change" is no negation at all.
4. Per report and observation: positive if any mention is positive, else uncertain if any is uncertain, else
   negative (CheXpert's aggregation). Observations never mentioned are left out.
5. No Finding is derived, as CheXpert does: 0 when any pathology (the 12 observations other than No Finding
   and Support Devices) is positive or uncertain; 1 when none is and the report either states normality
   ("no acute cardiopulmonary process", "normal chest radiograph") or negates some pathology; left out
   otherwise. So "The lungs are clear." gives {"Lung Opacity": 0, "No Finding": 1}: clear lungs negate lung
   opacity, and that negative statement with no positive one makes the study normal.

Labels: 1 positive, 0 negative, -1 uncertain. In `findings_prf` an uncertain label counts as positive by
default (`uncertain="positive"`, CheXpert's U-Ones policy: a hedged finding is one the radiologist saw);
`uncertain="ignore"` drops uncertain labels, so that only definite positives count.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from biomedgpt.eval.metrics._checks import check_pairs, check_text, safe_div

__all__ = ["OBSERVATIONS", "findings_prf", "label_report"]

OBSERVATIONS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
PATHOLOGIES = tuple(o for o in OBSERVATIONS if o not in ("No Finding", "Support Devices"))
POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1

_TUBE = r"(?:endotracheal|tracheostomy|nasogastric|orogastric|feeding|enteric|chest|et|ng|og|dobhoff|thoracostomy|gastric)"
_MENTIONS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        r"widen(?:ed|ing) (?:of the )?(?:superior )?mediastin(?:um|al silhouette)",
        r"mediastinal (?:widening|enlargement)",
        r"(?:cardio)?mediastinal enlargement",
    ),
    "Cardiomegaly": (r"cardiomegaly", r"cardiac enlargement", r"enlarged heart", r"enlargement of the heart"),
    "Lung Opacity": (
        r"opacit(?:y|ies)",
        r"opacification",
        r"opacified",
        r"infiltrat(?:e|es|ion|ive)",
        r"air ?space (?:disease|process)",
        r"ground glass",
        r"haziness",
        r"(?:retrocardiac|air ?space|patchy|hazy|increased) densit(?:y|ies)",
    ),
    "Lung Lesion": (
        r"nodul(?:e|es|ar opacit(?:y|ies)|arity)",
        r"mass(?:es)?",
        r"lesions?",
        r"tumou?rs?",
        r"neoplasms?",
        r"malignanc(?:y|ies)",
        r"carcinoma",
        r"metasta(?:sis|ses|tic disease)",
        r"granulomas?",
    ),
    "Edema": (
        r"o?edema",
        r"(?:pulmonary |vascular |venous |interstitial )+congestion",
        r"(?:congestive )?heart failure",
        r"chf",
        r"fluid overload",
        r"kerley b lines?",
        r"cephali[sz]ation",
    ),
    "Consolidation": (r"consolidat(?:ion|ions|ive|ed)",),
    "Pneumonia": (r"(?:broncho)?pneumonias?", r"pneumonitis", r"infectious process", r"infections?"),
    "Atelectasis": (
        r"atelecta(?:sis|ses|tic)",
        r"(?:lobar|lobe|segmental|subsegmental|lung) collapse",
        r"collapsed? (?:of )?(?:the )?(?:(?:left|right) )?(?:(?:upper|middle|lower) )?(?:lobe|lung)",
    ),
    "Pneumothorax": (r"pneumothora(?:x|xes|ces)", r"ptx"),
    "Pleural Effusion": (r"(?:pleural )?effusions?", r"pleural fluid", r"hydrothora(?:x|ces)"),
    "Pleural Other": (
        r"pleural (?:thickening|plaques?|scarring|calcifications?|fibrosis)",
        r"pleural parenchymal scarring",
        r"fibrothorax",
        r"apical (?:pleural )?(?:cap|capping|thickening)",
    ),
    "Fracture": (r"fractur(?:e|es|ed)", r"fx"),
    "Support Devices": (
        _TUBE + r" tubes?",
        r"tubes?",
        r"(?:central venous |central |picc |swan ganz |pulmonary artery |dialysis )?catheters?",
        r"picc(?: lines?)?",
        r"central (?:venous )?lines?",
        r"(?:internal jugular|ij|subclavian) (?:lines?|sheaths?)",
        r"port a cath|portacath|mediport",
        r"pacemakers?|pacers?|a?icd|defibrillators?",
        r"(?:pacemaker|pacer|icd|aicd|ecg|ekg|epicardial|pacing|monitoring) (?:leads?|wires?)",
        r"(?:sternotomy|sternal) wires",
        r"(?:surgical )?drains?",
        r"stents?",
        r"(?:prosthetic|replaced) valves?|valve replacement",
        r"(?:support |monitoring )?devices?",
    ),
}
# Look-alikes that must not count as a mention (they win over shorter overlapping matches).
_BLOCKERS = (
    r"pericardial effusions?",
    r"joint effusions?",
    r"mass effect",
    r"soft tissue (?:o?edema|swelling)",
)

_NORMAL_SIZE = r"normal|within normal limits|unremarkable|not (?:\w+ )?(?:enlarged|widened|large|prominent)"
_BORDERLINE = r"borderline(?: (?:enlarged|enlargement|large|prominent|widened))?"
# (observation, anatomical term, abnormal qualifier, borderline qualifier, normal qualifier)
_ATTRIBUTES: tuple[tuple[str, str, str | None, str | None, str], ...] = (
    (
        "Cardiomegaly",
        r"heart size|cardiac size|size of the heart|heart|cardiac silhouette|cardiac contours?|cardiac shadow",
        r"enlarged|enlargement|large|increased|prominent|prominence",
        _BORDERLINE,
        _NORMAL_SIZE,
    ),
    (
        "Enlarged Cardiomediastinum",
        r"(?:cardio)?mediastinal (?:and hilar )?(?:silhouettes?|contours?|shadow)|(?:superior )?mediastinum",
        r"enlarged|enlargement|widened|widening|wide|prominent|prominence|increased",
        _BORDERLINE,
        _NORMAL_SIZE,
    ),
    ("Lung Opacity", r"lungs?|lung fields|lung parenchyma", None, None, r"clear"),
    (
        "Edema",
        r"(?:pulmonary )?(?:vascularity|vasculature|vessels|vascular markings)|interstitial markings",
        r"engorged|engorgement|congested|prominent|prominence|increased|indistinct|cephali[sz]ed",
        None,
        r"normal|within normal limits|unremarkable|not (?:\w+ )?(?:engorged|congested|prominent|increased)",
    ),
    (
        "Pleural Effusion",
        r"costophrenic (?:angles?|sulc(?:us|i))|cp angles?",
        r"blunt(?:ed|ing)",
        None,
        r"sharp|clear|preserved|normal",
    ),
)

_NEG_PRE = (
    r"no|not|without|negative for|free of|clear of|absence of|absent|resolved|resolution of|removal of"
    r"|rule out|rules out|ruled out|r/o|never|neither|nor|denies"
)
_NEG_POST = (
    r"(?:(?:is|are|was|were|has|have) (?:been )?)?(?:not (?:\w+ )?(?:seen|identified|visuali[sz]ed|present"
    r"|appreciated|demonstrated|evident|noted|detected|observed|visible)|no longer (?:\w+ )?(?:seen|present"
    r"|visuali[sz]ed|identified|visible|evident)|absent|resolved|cleared|removed|withdrawn|ruled out|excluded)"
)
_UNC_PRE = (
    r"may|might|could|possible|possibly|probable|probably|likely|unlikely|questionable|question of|suspected"
    r"|suspicious (?:for|of)|suspicion (?:for|of)|suggestive of|suggests?|suggesting|concerning for|concern for"
    r"|worrisome for|(?:cannot|can not|could not) (?:entirely |completely )?(?:exclude|rule out)|borderline"
    r"|equivocal|indeterminate|presumed|differential(?: diagnosis)?(?: includes?)?|versus|vs"
)
_UNC_POST = (
    r"(?:(?:is|are) (?:also )?(?:possible|suspected|questioned|likely|probable|considered|a consideration))"
    r"|(?:(?:cannot|can not|could not|can't) be (?:entirely |completely )?(?:excluded|ruled out))"
    r"|(?:(?:is|are) )?not (?:entirely |completely )?(?:excluded|ruled out)|(?:may|might|could) be present"
    r"|versus|vs"
)
_PSEUDO_NEG = (
    r"(?:no|without) (?:(?:significant|interval|appreciable|substantial|definite|further) )*"
    r"(?:change|changes|increase|decrease|improvement|worsening|progression)|not (?:significantly )?changed"
)
_CLAUSE_BREAK = (
    r"[;:]|,(?= (?:there|the|this|these|it|which|but|however|although|though|while|whereas)\b)"
    r"|\b(?:but|however|although|though|whereas|while|yet|except|aside from|apart from|other than"
    r"|which|who|there (?:is|are|was|were|has|have))\b"
)
# The words between a term and its qualifier may hold a copula or "otherwise" ("lungs are otherwise clear").
_QUALIFIER_BREAK = re.compile(_CLAUSE_BREAK)
# Negation scope also ends at a finite verb, which starts a new predicate ("no effusion and the heart is ...").
_BREAK = re.compile(_CLAUSE_BREAK + r"|\b(?:otherwise|is|are|was|were|has|have)\b")
# Words that may stand between a mention and its post-cue ("effusion and the left pneumothorax have resolved").
_POST_GAP_WORDS = frozenset(
    "and or nor the a an any either both left right bilateral small large tiny previously previous "  # noqa: SIM905
    "prior seen noted described also now".split()
)
_NORMAL_STUDY = re.compile(
    r"\bno (?:acute|active) (?:cardiopulmonary |intrathoracic |pulmonary |cardiothoracic |chest )?"
    r"(?:process|abnormalit(?:y|ies)|disease|findings?|pathology)\b"
    r"|\bnormal (?:chest )?(?:study|exam(?:ination)?|radiograph|x ray|film)\b|\bnormal chest\b"
    r"|\bno (?:radiographic|radiological|radiologic) (?:evidence of )?(?:acute )?(?:disease|abnormality)\b"
    r"|\bunremarkable (?:chest|study|exam(?:ination)?|radiograph)\b"
)


def _word_re(alternatives: str) -> re.Pattern:
    return re.compile(r"\b(?:" + alternatives + r")\b")


_MENTION_RES = [(obs, _word_re(p)) for obs, patterns in _MENTIONS.items() for p in patterns]
_BLOCKER_RES = [_word_re(p) for p in _BLOCKERS]
# (kind, direction, pattern) in matching order: a negation cue is dropped where it overlaps an uncertainty
# or pseudo-negation cue, or lies inside a longer post-negation ("not" of "is not seen", "resolved" of "has
# resolved"), so that it does not reach forward into the next clause.
_CUE_RES = (
    (UNCERTAIN, "pre", _word_re(_UNC_PRE)),
    (UNCERTAIN, "post", _word_re(_UNC_POST)),
    (None, "pseudo", _word_re(_PSEUDO_NEG)),
    (NEGATIVE, "post", _word_re(_NEG_POST)),
    (NEGATIVE, "pre", _word_re(_NEG_PRE)),
)


def _qualifier_re(abnormal: str | None, borderline: str | None, normal: str) -> str:
    groups = [f"(?P<b>{borderline})"] if borderline else []
    groups.append(f"(?P<n>{normal})")
    if abnormal:
        groups.append(f"(?P<a>{abnormal})")
    return "(?:" + "|".join(groups) + ")"


_ATTRIBUTE_RES = [
    (
        obs,
        _word_re(term),
        re.compile(r"\b" + _qualifier_re(ab, bl, nm) + r" (?:of )?(?:the )?(?:(?:left|right|bilateral) )?$"),
        re.compile(r"^[\s,:]*((?:[a-z/']+[\s,:]+){0,5}?)" + _qualifier_re(ab, bl, nm) + r"\b"),
    )
    for obs, term, ab, bl, nm in _ATTRIBUTES
]
_QUALIFIER_STATUS = {"a": POSITIVE, "b": UNCERTAIN, "n": NEGATIVE}


def _sentences(report: str) -> list[str]:
    """Lower-case, hyphens to spaces, abbreviations without their period, split into sentences."""
    text = report.lower().replace("-", " ")
    text = re.sub(r"\b(vs|e\.g|i\.e)\.", lambda m: m.group(1).replace(".", ""), text)
    parts = re.split(r"(?<!\d)\.|\.(?!\d)|[!?\n]", text)
    return [" ".join(p.split()) for p in parts if p.strip()]


def _find_cues(sentence: str) -> list[tuple[int, int, int, str]]:
    """(start, end, kind, direction) of every cue; uncertainty and pseudo-negation mask overlapping negation."""
    cues: list[tuple[int, int, int | None, str]] = []
    for kind, direction, pattern in _CUE_RES:
        for m in pattern.finditer(sentence):
            if kind == NEGATIVE and any(_masks(c, m, direction) for c in cues):
                continue
            cues.append((m.start(), m.end(), kind, direction))
    return [c for c in cues if c[2] is not None]


def _masks(cue: tuple, match: re.Match, direction: str) -> bool:
    """Whether an earlier cue hides the negation `match` (see `_CUE_RES`)."""
    start, end, kind, _ = cue
    if not (start < match.end() and match.start() < end):
        return False
    if kind != NEGATIVE:
        return True
    return direction == "pre" and end - start > match.end() - match.start()


def _find_mentions(sentence: str) -> list[tuple[int, int, str, int | None]]:
    """Non-overlapping (start, end, observation, attribute index or None), longest match first."""
    candidates = [(m.start(), m.end(), obs, None) for obs, rx in _MENTION_RES for m in rx.finditer(sentence)]
    candidates += [(m.start(), m.end(), "", None) for rx in _BLOCKER_RES for m in rx.finditer(sentence)]
    for index, (obs, term_re, _, _) in enumerate(_ATTRIBUTE_RES):
        candidates += [(m.start(), m.end(), obs, index) for m in term_re.finditer(sentence)]
    kept: list[tuple[int, int, str, int | None]] = []
    for cand in sorted(candidates, key=lambda c: (c[0] - c[1], c[0])):
        if all(cand[1] <= k[0] or k[1] <= cand[0] for k in kept):
            kept.append(cand)
    return sorted(k for k in kept if k[2])


def _clause_open(sentence: str, start: int, end: int) -> bool:
    """True when no clause boundary lies in sentence[start:end]."""
    return _BREAK.search(sentence, start, end) is None


def _post_gap_ok(sentence: str, start: int, end: int, mentions: list) -> bool:
    """True when only connectives (and other mentions) stand between a mention and a post-cue."""
    gap = "".join(" " if any(m[0] <= i < m[1] for m in mentions) else sentence[i] for i in range(start, end))
    words = gap.replace(",", " ").split()
    return all(word in _POST_GAP_WORDS for word in words)


def _cue_status(sentence: str, span: tuple[int, int], cues: list, mentions: list) -> int | None:
    """Kind of the cue governing sentence[span]: nearest open pre-cue, else nearest post-cue, else None."""
    start, end = span
    pre = [c for c in cues if c[3] == "pre" and c[1] <= start and _clause_open(sentence, c[1], start)]
    if pre:
        return max(pre, key=lambda c: c[1])[2]
    post = [c for c in cues if c[3] == "post" and c[0] >= end and _post_gap_ok(sentence, end, c[0], mentions)]
    return min(post, key=lambda c: c[0])[2] if post else None


def _attribute_status(sentence: str, mention: tuple, cues: list, mentions: list) -> int | None:
    """Status of an anatomical term from its qualifier and cues; None when it has no qualifier."""
    start, end, _, index = mention
    _, _, before_re, after_re = _ATTRIBUTE_RES[index]
    before = before_re.search(sentence, 0, start)
    if before:
        base = _QUALIFIER_STATUS[before.lastgroup]
        cue = _cue_status(sentence, (before.start(), end), cues, mentions)
        return base if base == NEGATIVE or cue is None else cue
    after = after_re.match(sentence[end:])
    if not after or _QUALIFIER_BREAK.search(after.group(1)):
        return None
    base = _QUALIFIER_STATUS[after.lastgroup]
    qualifier_start = end + after.start(after.lastgroup)
    inside = [c for c in cues if end <= c[0] and c[1] <= qualifier_start]
    if base == NEGATIVE or not inside:
        return base
    return max(inside, key=lambda c: c[1])[2]


def _label_sentence(sentence: str) -> list[tuple[str, int]]:
    """(observation, status) for every mention in one sentence."""
    cues = _find_cues(sentence)
    mentions = _find_mentions(sentence)
    labels = []
    for mention in mentions:
        if mention[3] is None:
            cue = _cue_status(sentence, mention[:2], cues, mentions)
            status = POSITIVE if cue is None else cue
        else:
            status = _attribute_status(sentence, mention, cues, mentions)
        if status is not None:
            labels.append((mention[2], status))
    return labels


def label_report(report: str) -> dict[str, int]:
    """{observation: 1 | 0 | -1} for the observations a report mentions (module docstring for the rules)."""
    check_text(report, metric="label_report", what="report")
    statuses: dict[str, set[int]] = {}
    normal_study = False
    for sentence in _sentences(report):
        normal_study = normal_study or bool(_NORMAL_STUDY.search(sentence))
        for observation, status in _label_sentence(sentence):
            statuses.setdefault(observation, set()).add(status)
    labels = {}
    for observation in OBSERVATIONS:
        found = statuses.get(observation)
        if found:
            labels[observation] = next(s for s in (POSITIVE, UNCERTAIN, NEGATIVE) if s in found)
    pathology = [labels[o] for o in PATHOLOGIES if o in labels]
    if any(s != NEGATIVE for s in pathology):
        labels["No Finding"] = NEGATIVE
    elif pathology or normal_study:
        labels["No Finding"] = POSITIVE
    return {o: labels[o] for o in OBSERVATIONS if o in labels}


def _positives(labels: dict[str, int], uncertain: str) -> set[str]:
    wanted = {POSITIVE, UNCERTAIN} if uncertain == "positive" else {POSITIVE}
    return {o for o, s in labels.items() if s in wanted}


def findings_prf(
    predictions: Sequence[str], references: Sequence[str], *, uncertain: str = "positive"
) -> dict:
    """Precision/recall/F1 of positive findings, generated reports against reference reports.

    Returns micro_* (counts pooled over observations) and macro_* (mean over the observations that occur in
    a prediction or a reference; P, R or F1 with a zero denominator is 0) for precision, recall and f1, and
    per_finding: {observation: {tp, fp, fn, support, precision, recall, f1}} for all 14 observations.
    """
    check_pairs(predictions, references, metric="findings_prf")
    if uncertain not in ("positive", "ignore"):
        raise ValueError(f"findings_prf: uncertain must be 'positive' or 'ignore', got {uncertain!r}")
    counts = {o: {"tp": 0, "fp": 0, "fn": 0} for o in OBSERVATIONS}
    for prediction, reference in zip(predictions, references):
        predicted = _positives(
            label_report(check_text(prediction, metric="findings_prf", what="a prediction")), uncertain
        )
        actual = _positives(
            label_report(check_text(reference, metric="findings_prf", what="a reference")), uncertain
        )
        for o in predicted & actual:
            counts[o]["tp"] += 1
        for o in predicted - actual:
            counts[o]["fp"] += 1
        for o in actual - predicted:
            counts[o]["fn"] += 1
    per_finding = {
        o: _prf(c["tp"], c["fp"], c["fn"]) | c | {"support": c["tp"] + c["fn"]} for o, c in counts.items()
    }
    active = [per_finding[o] for o, c in counts.items() if c["tp"] + c["fp"] + c["fn"] > 0]
    total = {k: sum(c[k] for c in counts.values()) for k in ("tp", "fp", "fn")}
    result = {f"micro_{k}": v for k, v in _prf(total["tp"], total["fp"], total["fn"]).items()}
    for key in ("precision", "recall", "f1"):
        result[f"macro_{key}"] = safe_div(sum(p[key] for p in active), len(active))
    return result | {"per_finding": per_finding}


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision, recall = safe_div(tp, tp + fp), safe_div(tp, tp + fn)
    return {
        "precision": precision,
        "recall": recall,
        "f1": safe_div(2 * precision * recall, precision + recall),
    }
