import tests.gpu.test_cuda as g


def test_bf16_cpu(monkeypatch):
    monkeypatch.setattr(g, "DEVICE", "cpu")
    g.test_bf16_training_steps_on_cuda()


def test_finetune_cpu(monkeypatch, tmp_path):
    monkeypatch.setattr(g, "DEVICE", "cpu")
    g.test_finetune_bf16_mixed_on_cuda(tmp_path)


def test_ort_cpu(monkeypatch, exported_model_dir):
    monkeypatch.setattr(g, "ORT_CUDA", "CPUExecutionProvider")
    real = g._cuda_session
    monkeypatch.setattr(g, "_cuda_session", lambda path, providers: real(path, ["CPUExecutionProvider"]))
    g.test_onnx_runtime_cuda_provider_matches_the_cpu_provider(exported_model_dir)
