"""ServeConfig: validation, the environment layer and its precedence, and the `biomedgpt serve` guards."""

from __future__ import annotations

import pytest

from biomedgpt import cli
from biomedgpt.config import ConfigError
from biomedgpt.serve.config import ServeConfig, config_from_env, load_serve_config


def test_defaults_are_safe():
    cfg = ServeConfig()
    assert cfg.host == "127.0.0.1" and cfg.is_loopback and cfg.api_key is None
    assert cfg.engine == "onnxruntime" and cfg.max_body_bytes == 10 * 1024 * 1024
    limits = cfg.engine_limits()
    assert (limits.max_prompt_tokens, limits.max_new_tokens, limits.max_beams) == (256, 1024, 8)
    image = cfg.image_limits()
    assert (image.max_pixels, image.max_decode_bytes) == (40_000_000, 512 * 1024 * 1024)
    assert cfg.max_connections == 64 and cfg.header_timeout_s == 10.0 and cfg.body_timeout_s == 30.0
    # /docs (CDN scripts) off, and /metrics and /openapi.json behind the key when one is set.
    assert not cfg.enable_docs and not cfg.metrics_public


def test_docs_and_metrics_flags_from_the_environment():
    env = {"BIOMEDGPT_SERVE_ENABLE_DOCS": "true", "BIOMEDGPT_SERVE_METRICS_PUBLIC": "true"}
    cfg = load_serve_config(environ=env)
    assert cfg.enable_docs and cfg.metrics_public


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("port", 0),
        ("port", 70000),
        ("max_batch_size", 0),
        ("max_wait_ms", -1.0),
        ("num_threads", 0),
        ("host", " "),
        ("max_decode_bytes", 0),
        ("decode_workers", 0),
        ("max_connections", 0),
        ("header_timeout_s", 0.0),
        ("body_timeout_s", -1.0),
        ("keep_alive_timeout_s", 0.0),
        ("image_working_side", 8),
        ("max_text_chars", 0),
    ],
)
def test_invalid_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        load_serve_config(environ={}, flags={key: value})


def test_precedence_defaults_yaml_env_overrides_flags(tmp_path):
    yaml_file = tmp_path / "serve.yaml"
    yaml_file.write_text("port: 9001\nmax_batch_size: 2\nmax_queue: 7\nhost: 0.0.0.0\n")
    env = {"BIOMEDGPT_SERVE_PORT": "9002", "BIOMEDGPT_SERVE_MAX_BATCH_SIZE": "3"}
    cfg = load_serve_config([yaml_file], ["max_batch_size=4"], environ=env, flags={"host": "127.0.0.2"})
    assert (cfg.port, cfg.max_batch_size, cfg.max_queue, cfg.host) == (9002, 4, 7, "127.0.0.2")
    assert cfg.max_wait_ms == 5.0  # untouched default


def test_environment_values_are_typed():
    env = {
        "BIOMEDGPT_SERVE_MAX_WAIT_MS": "2.5",
        "BIOMEDGPT_SERVE_ALLOW_NO_KEY": "true",
        "BIOMEDGPT_SERVE_NUM_THREADS": "null",
        "BIOMEDGPT_SERVE_MODEL": "/models/x",
        "BIOMEDGPT_SERVE_ENGINE": "torch",
        "BIOMEDGPT_SERVE_PORT": "",  # empty = unset
    }
    cfg = load_serve_config(environ=env)
    assert cfg.max_wait_ms == 2.5 and cfg.allow_no_key is True and cfg.num_threads is None
    assert str(cfg.model) == "/models/x" and cfg.engine == "torch" and cfg.port == 8000


def test_a_bad_environment_value_names_the_variable():
    with pytest.raises(ConfigError, match=r"BIOMEDGPT_SERVE_PORT='eighty'.*expected int"):
        load_serve_config(environ={"BIOMEDGPT_SERVE_PORT": "eighty"})
    with pytest.raises(ConfigError, match=r"BIOMEDGPT_SERVE_MAX_QUEUE='0'.*>= 1"):
        load_serve_config(environ={"BIOMEDGPT_SERVE_MAX_QUEUE": "0"})
    # An override fixes it: the command line wins over the environment.
    assert load_serve_config(["/dev/null"], ["port=81"], environ={"BIOMEDGPT_SERVE_PORT": "x"}).port == 81


def test_api_key_from_either_variable_stays_text_and_is_never_echoed():
    assert load_serve_config(environ={"BIOMEDGPT_API_KEY": "0123"}).api_key == "0123"
    assert load_serve_config(environ={"BIOMEDGPT_SERVE_API_KEY": "k1"}).api_key == "k1"
    with pytest.raises(ConfigError, match="both set") as exc:
        config_from_env({"BIOMEDGPT_SERVE_API_KEY": "secret-a", "BIOMEDGPT_API_KEY": "secret-b"})
    assert "secret" not in str(exc.value)
    assert ServeConfig(api_key="s3cret").redacted()["api_key"] == "***"


def test_cli_refuses_a_public_host_without_a_key(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BIOMEDGPT_API_KEY", raising=False)
    monkeypatch.delenv("BIOMEDGPT_SERVE_API_KEY", raising=False)
    assert cli.main(["serve", "--model", str(tmp_path), "--host", "0.0.0.0"]) == 2
    assert "without an API key" in capsys.readouterr().err


def test_cli_errors_and_dump_config(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BIOMEDGPT_SERVE_MODEL", raising=False)
    monkeypatch.setenv("BIOMEDGPT_API_KEY", "hidden-key")
    assert cli.main(["serve"]) == 2
    assert "no model" in capsys.readouterr().err
    assert cli.main(["serve", "--model", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["serve", "--port", "9", "max_batch_size=3", "--dump-config"]) == 0
    out = capsys.readouterr().out
    assert "port: 9" in out and "max_batch_size: 3" in out and "api_key: '***'" in out
    assert "hidden-key" not in out
    assert cli.main(["serve", "max_batchsize=3"]) == 2
    assert "did you mean 'max_batch_size'" in capsys.readouterr().err
