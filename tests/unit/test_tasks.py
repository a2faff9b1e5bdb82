"""Task definitions: prompts, templates, targets, constraints and postprocessing."""

from __future__ import annotations

import random

import numpy as np
import pytest

from biomedgpt.data.schema import TASKS as SCHEMA_TASKS
from biomedgpt.data.schema import Sample
from biomedgpt.ingest.synthetic import synthetic_samples
from biomedgpt.tasks import CONSTRAINTS, TASKS, TaskUnavailableError, UnknownTaskError, get_task
from biomedgpt.tasks import base as task_base
from biomedgpt.tasks.base import TargetTooLongError, template_fields
from biomedgpt.tasks.detection import reading_order
from biomedgpt.tasks.text_infilling import mask_words
from biomedgpt.tasks.vqa import normalize_question

BIOMEDGPT_PROMPTS = {
    "caption": " what does the image describe?",
    "report": " what does the image describe?",
    "vqa": " {question}",
    "classification": " what does the image describe?",
    "grounding": ' which region does the text " {text} " describe?',
    "detection": " what are the objects in the image?",
    "segmentation": " segment the {structure}.",
    "image_infilling": " what is the image in the middle part?",
    "text_infilling": ' what is the complete text of " {masked} "?',
    "summarization": ' what is the summary of article " {text} "?',
}


@pytest.fixture(scope="module")
def tokenizer():
    from biomedgpt.tokenization.unified import BiomedGPTTokenizer

    return BiomedGPTTokenizer.load_default()


@pytest.fixture(scope="module")
def synthetic() -> list[Sample]:
    return list(synthetic_samples(200, image_size=64))


def first_sample(task: str, *, split: str | None = None, image_size: int = 64) -> Sample:
    for sample in synthetic_samples(400, image_size=image_size):
        if sample.task == task and (split is None or sample.split == split):
            return sample
    raise AssertionError(f"no synthetic {task} sample")


def image_sample(task: str, *, width: int, height: int, fields: dict) -> Sample:
    image = np.random.default_rng(0).integers(0, 255, (height, width), dtype=np.uint8)
    return Sample(key="k1", task=task, split="train", image=image, fields=fields)


# --- registry and templates ------------------------------------------------------------------------


def test_registry_covers_every_schema_task_with_biomedgpt_prompts():
    assert set(TASKS) == set(SCHEMA_TASKS)
    for name, prompt in BIOMEDGPT_PROMPTS.items():
        task = get_task(name)
        assert task.name == name
        assert task.biomedgpt_prompt == prompt
        assert task.constraint in CONSTRAINTS


def test_one_model_gets_a_distinct_instruction_per_task():
    """BiomedGPT asks for captions, classes and reports with the same words; our models learn one per task, and
    no task's fixed prompt is another task's paraphrase."""
    prompts = [task.prompt for task in TASKS.values()]
    assert len(set(prompts)) == len(prompts)
    for task in TASKS.values():
        for other in TASKS.values():
            if other is not task:
                assert task.prompt not in (*other.train_templates, *other.eval_templates), (
                    task.name,
                    other.name,
                )


def test_train_and_eval_templates_are_disjoint_and_nonempty():
    for task in TASKS.values():
        train, held_out = set(task.train_templates), set(task.eval_templates)
        assert len(train) >= 6 and len(held_out) >= 3, task.name
        assert not train & held_out, task.name
        assert task.train_templates[0] == task.prompt
        for template in (*train, *held_out):
            assert template.startswith(" ") and template_fields(template) == template_fields(task.prompt)


def test_unknown_task_name_says_did_you_mean():
    with pytest.raises(UnknownTaskError, match="did you mean 'caption'"):
        get_task("captoin")
    with pytest.raises(KeyError, match="unknown task 'xyz'"):
        get_task("xyz")


def test_choose_template_modes_are_seeded_and_stable():
    task = get_task("caption")
    assert task.choose_template("fixed") == task.prompt
    picks = {task.choose_template("train", rng=random.Random(i)) for i in range(200)}
    assert picks == set(task.train_templates)
    assert task.choose_template("eval", key="abc") == task.choose_template("eval", key="abc")
    assert {task.choose_template("eval", key=f"k{i}") for i in range(100)} == set(task.eval_templates)
    with pytest.raises(ValueError, match="prompt mode"):
        task.choose_template("random")


def test_served_prompt_share_sets_how_often_training_sees_the_served_prompt():
    task = get_task("segmentation")
    draws = [task.choose_template("train", rng=random.Random(i), served_share=0.5) for i in range(2000)]
    share = draws.count(task.prompt) / len(draws)
    assert 0.45 < share < 0.55  # uniform over the 7 templates would give 1 in 7
    assert set(draws) == set(task.train_templates)  # the other paraphrases still come
    assert {task.choose_template("train", rng=random.Random(i), served_share=1.0) for i in range(50)} == {
        task.prompt
    }
    assert task.prompt not in {
        task.choose_template("train", rng=random.Random(i), served_share=0.0) for i in range(200)
    }


# --- prompts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("is there a lesion", "is there a lesion?"),
        ("is there a lesion?", "is there a lesion?"),
        ("is  there a lesion ? ?? ", "is there a lesion?"),
    ],
)
def test_vqa_question_ends_with_exactly_one_question_mark(question, expected):
    assert normalize_question(question) == expected
    sample = image_sample("vqa", width=32, height=32, fields={"question": question, "answer": "yes"})
    assert get_task("vqa").build_prompt(sample) == " " + expected


def test_grounding_and_segmentation_prompts():
    sample = image_sample(
        "grounding", width=40, height=30, fields={"boxes": [{"box": [1, 2, 10, 20], "label": "the  lesion"}]}
    )
    assert (
        get_task("grounding").build_prompt(sample) == ' which region does the text " the lesion " describe?'
    )
    seg = first_sample("segmentation")
    assert get_task("segmentation").build_prompt(seg) == " segment the lesion."


def test_text_infilling_masks_whole_word_spans():
    text = "an axial ct-like image with one bright round lesion in the left upper region"
    masked = mask_words(text, random.Random(0))
    words = text.split()
    kept = [w for w in masked.split() if w != "<mask>"]
    assert "<mask>" in masked and "<mask> <mask>" not in masked
    assert len(words) - len(kept) >= int(np.ceil(0.3 * len(words)))
    assert all(w in words for w in kept)
    assert mask_words(text, random.Random(0)) == masked  # seeded
    sample = Sample(key="t1", task="text_infilling", split="train", fields={"text": text})
    prompt = get_task("text_infilling").build_prompt(sample, rng=random.Random(0))
    assert prompt == f' what is the complete text of " {masked} "?'


# --- targets ---------------------------------------------------------------------------------------


def test_text_targets_are_bpe_with_leading_space_then_eos(tokenizer):
    sample = first_sample("caption")
    ids = get_task("caption").build_target(sample, tokenizer)
    assert ids[-1] == tokenizer.layout.eos_id
    assert tokenizer.decode_text(ids) == " " + sample.fields["text"]
    cut = get_task("caption").build_target(sample, tokenizer, max_tokens=5)
    assert len(cut) == 5 and cut[-1] == tokenizer.layout.eos_id and cut[:4] == ids[:4]


def test_grounding_target_is_four_bins_that_decode_within_one_bin(tokenizer):
    layout = tokenizer.layout
    width, height = 300, 200
    box = [12.3, 40.0, 250.5, 199.0]
    sample = image_sample(
        "grounding", width=width, height=height, fields={"boxes": [{"box": box, "label": "x"}]}
    )
    task = get_task("grounding")
    ids = task.build_target(sample, tokenizer)
    assert len(ids) == 5 and ids[-1] == layout.eos_id and all(layout.is_bin(t) for t in ids[:4])
    out = task.postprocess(
        [layout.bos_id, *ids, layout.pad_id], tokenizer, image_size=256, orig_size=(width, height)
    )
    bin_w, bin_h = width / (layout.num_bins - 1), height / (layout.num_bins - 1)
    for got, want, step in zip(out["box"], box, (bin_w, bin_h, bin_w, bin_h)):
        assert abs(got - want) <= step
    assert task.postprocess(ids[:3], tokenizer, image_size=256, orig_size=(width, height)) == {"box": None}
    with pytest.raises(TargetTooLongError):
        task.build_target(sample, tokenizer, max_tokens=4)


def test_detection_target_in_reading_order_round_trips(tokenizer):
    layout = tokenizer.layout
    boxes = [
        {"box": [50, 60, 70, 80], "label": "round lesion"},
        {"box": [10, 5, 30, 25], "label": "rectangular lesion"},
        {"box": [5, 60, 20, 90], "label": "cyst"},
    ]
    sample = image_sample("detection", width=100, height=100, fields={"boxes": boxes})
    task = get_task("detection")
    ids = task.build_target(sample, tokenizer)
    assert ids[-1] == layout.eos_id and all(layout.is_bin(t) for t in ids[:4])
    out = task.postprocess(ids, tokenizer, image_size=256, orig_size=(100, 100))
    assert [o["label"] for o in out["objects"]] == [b["label"] for b in reading_order(boxes)]
    assert [o["label"] for o in out["objects"]] == ["rectangular lesion", "cyst", "round lesion"]
    for obj, entry in zip(out["objects"], reading_order(boxes)):
        assert np.allclose(obj["box"], entry["box"], atol=100 / 999)
    short = task.build_target(sample, tokenizer, max_tokens=len(ids) - 1)  # whole objects only
    assert short[-1] == layout.eos_id
    assert len(task.postprocess(short, tokenizer, image_size=256, orig_size=(100, 100))["objects"]) == 2
    empty = image_sample("detection", width=100, height=100, fields={"boxes": []})
    assert task.build_target(empty, tokenizer) == [layout.eos_id]


def test_detection_postprocess_drops_malformed_objects(tokenizer):
    layout = tokenizer.layout
    bins = [layout.bin_id(b) for b in (1, 2, 3, 4)]
    label = tokenizer.backend_tokenizer.encode(" cyst", add_special_tokens=False).ids
    ids = [*bins[:2], *label, *bins, *label, *bins, *bins, *label, layout.eos_id]
    objects = get_task("detection").postprocess(ids, tokenizer, image_size=64, orig_size=(999, 999))[
        "objects"
    ]
    assert [o["label"] for o in objects] == ["cyst", "", "cyst"]


def test_closed_set_answers_come_from_the_train_split_only(tokenizer):
    samples = [
        Sample(
            key=f"k{i}",
            task="classification",
            split=split,
            image=np.zeros((8, 8), np.uint8),
            fields={"label": label},
        )
        for i, (split, label) in enumerate(
            [("train", "no lesion"), ("train", "one lesion"), ("val", "secret class"), ("train", "no lesion")]
        )
    ]
    task = get_task("classification")
    assert task.closed_set
    answers = task.candidate_answers(samples)
    assert answers == ["no lesion", "one lesion"]
    trie = task.answer_trie(answers, tokenizer)
    target = task.build_target(samples[1], tokenizer)
    assert trie.contains(target)
    assert not trie.contains(task.build_target(samples[2], tokenizer))
    with pytest.raises(ValueError, match="open-ended"):
        get_task("caption").answer_trie(answers, tokenizer)


def test_constraint_masks(tokenizer):
    layout = tokenizer.layout
    assert get_task("caption").allowed_token_mask(layout)[layout.text_range[0]]
    grounding = get_task("grounding").allowed_token_mask(layout)
    assert grounding[layout.bin_range[0]] and not grounding[layout.text_range[0]]
    seg = get_task("segmentation").allowed_token_mask(layout)
    assert seg[layout.mask_id] and seg[layout.eos_id] and seg[layout.bin_range[1]]


@pytest.mark.parametrize("name", [n for n in sorted(TASKS) if n not in ("image_infilling",)])
def test_decoding_may_emit_every_token_a_target_holds(tokenizer, synthetic, name):
    """What a task trains on, its constrained decoding can write: a target token outside the task's allowed mask
    could never be generated (detection's labels were, under a bins-only mask). Image infilling needs the image
    tokenizer (its own test)."""
    pytest.importorskip("biomedgpt.tasks.segmentation_codec")
    task = get_task(name)
    allowed = task.allowed_token_mask(tokenizer.layout)
    targets = [task.build_target(s, tokenizer, image_size=64) for s in synthetic if s.task == name][:20]
    assert targets
    for ids in targets:
        assert all(allowed[t] for t in ids), [tokenizer.decode([t]) for t in ids if not allowed[t]]


def test_segmentation_round_trip_through_the_codec(tokenizer):
    pytest.importorskip("biomedgpt.tasks.segmentation_codec")
    sample = first_sample("segmentation")
    task = get_task("segmentation")
    task.check_available()
    with pytest.raises(ValueError, match="image_size"):
        task.build_target(sample, tokenizer)
    ids = task.build_target(sample, tokenizer, image_size=64)
    assert ids[-1] == tokenizer.layout.eos_id
    height, width = sample.mask.shape
    mask = task.postprocess(ids, tokenizer, image_size=64, orig_size=(width, height))["mask"]
    assert mask.shape == (height, width) and mask.dtype == bool
    dice = 2 * (mask & sample.mask).sum() / (mask.sum() + sample.mask.sum())
    assert dice > 0.8


def test_a_crowded_mask_keeps_its_largest_parts_within_the_target_budget(tokenizer):
    """A tile of many nuclei is longer than a training run's `max_target_tokens`: the target keeps the largest
    ones that fit (the tile is not skipped); only when not even the largest fits is the sample too long."""
    pytest.importorskip("biomedgpt.tasks.segmentation_codec")
    mask = np.zeros((64, 64), dtype=bool)
    for i in range(4):  # 16 blobs, growing down the rows: the biggest are the last
        for j in range(4):
            side = 3 + i * 2 + j
            mask[4 + 15 * i : 4 + 15 * i + side, 2 + 15 * j : 2 + 15 * j + side] = True
    sample = Sample(key="crowd", task="segmentation", split="train", image=mask.astype(np.uint8) * 255,
                    mask=mask, fields={"target": "nuclei"})  # fmt: skip
    task = get_task("segmentation")
    whole = task.build_target(sample, tokenizer, image_size=64)
    assert len(whole) > 40
    fitted = task.build_target(sample, tokenizer, image_size=64, max_tokens=40)
    assert len(fitted) <= 40 and fitted[-1] == tokenizer.layout.eos_id
    kept = task.postprocess(fitted, tokenizer, image_size=64, orig_size=(64, 64))["mask"]
    assert 0 < kept.sum() < mask.sum() and (kept & mask).sum() >= 0.8 * kept.sum()
    assert kept[49:, :].sum() > kept[:15, :].sum()  # the largest blobs (bottom row) are the ones kept
    with pytest.raises(TargetTooLongError, match="no part of the mask fits"):
        task.build_target(sample, tokenizer, image_size=64, max_tokens=4)


def test_missing_component_raises_task_unavailable(monkeypatch):
    def missing(module, *, task, what):
        raise TaskUnavailableError(f"task {task} needs {module}")

    from biomedgpt.tasks import image_infilling, segmentation

    monkeypatch.setattr(segmentation, "require_module", missing)
    monkeypatch.setattr(image_infilling, "require_module", missing)
    monkeypatch.setattr(image_infilling, "_LOADED", [])
    with pytest.raises(TaskUnavailableError, match="segmentation_codec"):
        get_task("segmentation").check_available()
    with pytest.raises(TaskUnavailableError, match="image_vq"):
        get_task("image_infilling").check_available()
    assert get_task("segmentation").constraint == "bins"


def test_require_module_reports_missing_module_only():
    with pytest.raises(TaskUnavailableError, match="no_such_codec"):
        task_base.require_module("biomedgpt.tasks.no_such_codec", task="t", what="w")


def test_image_infilling_targets_are_codes_of_the_middle(tokenizer, monkeypatch):
    pytest.importorskip("biomedgpt.tokenization.image_vq")
    from biomedgpt.tasks import image_infilling
    from biomedgpt.tokenization.image_vq import ImageTokenizer

    vq = ImageTokenizer.from_config({}, seed=0)
    monkeypatch.setattr(image_infilling, "_LOADED", [vq])
    layout = tokenizer.layout
    task = get_task("image_infilling")
    sample = first_sample("image_infilling")
    ids = task.build_target(sample, tokenizer, image_size=64)  # 32 px middle, f = 8: 4 x 4 codes
    assert len(ids) == 17 and ids[-1] == layout.eos_id and all(layout.is_code(t) for t in ids[:-1])
    with pytest.raises(TargetTooLongError):
        task.build_target(sample, tokenizer, image_size=64, max_tokens=10)
    out = task.postprocess(ids, tokenizer, image_size=64)
    assert out["codes"].shape == (4, 4)
    pixels = task.transform_pixels(np.ones((3, 64, 64), np.float32))
    assert (pixels[:, 16:48, 16:48] == 0).all() and pixels[:, :16].all() and pixels[:, 48:].all()


def test_importing_tasks_stays_light():
    """The serving path (ONNX Runtime, no torch) imports the tasks for prompts and postprocessing."""
    import subprocess
    import sys

    code = (
        "import sys, biomedgpt.tasks; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_task_metrics_are_keys_that_eval_reports():
    for name, task in TASKS.items():
        reference, options = task.reference(first_sample(name))
        reported = task.score([reference], [reference], [options])
        assert set(task.metrics) <= set(reported), (name, task.metrics, sorted(reported))
        assert bool(task.metrics) == bool(reported), (name, sorted(reported))


def test_vqa_baselines_overall_and_per_question_majority():
    """The overall majority answer, and each question's own TRAIN majority (the bar of a model that looks)."""
    from biomedgpt.tasks import get_task

    def qa(key: str, split: str, question: str, answer: str) -> Sample:
        fields = {"question": question, "answer": answer, "answer_type": "closed"}
        return Sample(key=key, task="vqa", split=split, image=np.zeros((8, 8), np.uint8), fields=fields)

    train = [qa(f"a{i}", "train", "is there a lesion?", "no") for i in range(3)]
    train += [qa(f"b{i}", "train", "what modality is this", "ct") for i in range(2)]
    train += [qa("c", "train", "what modality is this?", "mri"), qa("d", "val", "is there a lesion?", "yes")]
    task = get_task("vqa")
    baseline = task.fit_baseline(train)
    assert baseline == {
        "majority_answer": "no",
        "per_question": {"is there a lesion?": "no", "what modality is this?": "ct"},
    }
    test = [qa("t1", "test", "what modality is this?", "ct"), qa("t2", "test", "is there a lesion ??", "yes"),
            qa("t3", "test", "which side?", "no")]  # fmt: skip
    refs, opts = (list(c) for c in zip(*(task.reference(s) for s in test)))
    scores = task.baseline_scores(baseline, test, refs, opts)
    assert scores["majority_answer"] == "no" and scores["accuracy"] == pytest.approx(1 / 3)  # only t3
    # ct for t1 (right), no for t2 (wrong), the overall "no" for the unseen t3 (right)
    assert scores["per_question_majority"]["accuracy"] == pytest.approx(2 / 3)
    assert task.baseline_scores("no", test, refs, opts).keys() == {"majority_answer", *scores} - {
        "per_question_majority"
    }
