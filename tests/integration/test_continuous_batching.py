"""Continuous batching on the exported graphs: requests that join a running ONNX Runtime batch at different steps
(cache rows of different lengths in one decoder call) get the answers the PyTorch model's modules give, and each
the answer it gets alone; text-only requests run beside image ones."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from biomedgpt.serve.engines import load_engine
from biomedgpt.serve.scheduler import Scheduler, SchedulerLimits
from biomedgpt.serve.types import TaskRequest

pytestmark = pytest.mark.integration


def _requests() -> list[TaskRequest]:
    rng = np.random.default_rng(3)
    images = [Image.fromarray((rng.random((48 + 8 * i, 64, 3)) * 255).astype("uint8")) for i in range(6)]
    asks = [
        ("caption", {}, 12, 1),
        ("vqa", {"question": "is there a lesion"}, 6, 1),
        ("report", {}, 20, 1),
        ("caption", {}, 9, 3),
        ("grounding", {"text": "the left lung"}, 5, 1),
        ("vqa", {"question": "what organ is this"}, 7, 2),
    ]
    return [
        TaskRequest(
            task=task, image=image, fields=fields, max_new_tokens=budget, num_beams=beams, closed_set=False
        )
        for image, (task, fields, budget, beams) in zip(images, asks)
    ]


def _staggered(engine, max_rows: int) -> list[list[int]]:
    """Requests arrive two steps apart, through `max_rows` rows: most join a batch already decoding."""
    scheduler = Scheduler(engine.step_model(), SchedulerLimits(max_rows=max_rows, max_tokens=10_000))
    jobs = [engine.job(engine.prepare(r)) for r in _requests()]
    pending = list(jobs)
    while pending or scheduler.running:
        if pending:
            scheduler.submit(pending.pop(0))
        scheduler.iterate()
        scheduler.iterate()
    return [job.sequence.result()[0] for job in jobs]


@pytest.fixture(scope="module")
def engines(served_model_dir, exported_model_dir):
    return load_engine(exported_model_dir, engine="onnxruntime"), load_engine(
        served_model_dir, engine="torch"
    )


def test_onnx_runtime_rows_of_different_lengths_match_torch_and_each_alone(engines):
    ort, torch_engine = engines
    got = _staggered(ort, max_rows=5)
    assert got == _staggered(torch_engine, max_rows=5)
    alone = [ort.run([ort.prepare(r)])[0].tokens for r in _requests()]
    assert got == alone
    assert len({len(t) for t in got}) > 1  # budgets differ: requests left at different steps


def test_text_only_requests_beside_image_requests(engines):
    """A request without an image is encoded with its image tokens masked (OFA's patch_masks): the same answer
    alone and in a batch with image requests, on both engines."""
    ort, torch_engine = engines
    for engine in (ort, torch_engine):
        image_request = engine.prepare(_requests()[0])
        text_only = engine.prepare(_requests()[2])
        text_only.pixels = None
        alone = engine.run([text_only])[0].tokens
        together = engine.run([image_request, text_only])
        assert together[1].tokens == alone
        assert together[0].tokens == engine.run([image_request])[0].tokens
    assert ort.run([text_only])[0].tokens == torch_engine.run([text_only])[0].tokens


def test_an_export_of_the_earlier_graphs_is_refused_with_what_to_do(exported_model_dir, tmp_path):
    """A decoder graph without `cache_lengths` (exports made before continuous batching) cannot serve: loading
    says so in one line and names the command that fixes it."""
    import shutil

    import onnx
    from onnx import TensorProto, helper

    from biomedgpt.errors import UserError

    old = tmp_path / "old-export"
    shutil.copytree(exported_model_dir, old)
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", 1])
    logits = helper.make_tensor_value_info("logits", TensorProto.INT64, ["batch", 1])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input_ids"], ["logits"])], "old", [ids], [logits]
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
        str(old / "decoder.onnx"),
    )
    with pytest.raises(UserError, match=r"no 'cache_lengths' input\); export the checkpoint again"):
        load_engine(old, engine="onnxruntime", verify=False)
