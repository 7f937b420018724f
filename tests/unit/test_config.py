"""Config: strict schema, every problem reported with its line, secrets as references."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.config import load_config, load_config_file
from modelyard.config.schema import AnthropicDeployment, LlamaCppDeployment, OpenAIDeployment
from modelyard.errors import ConfigError

ISSUE_EXAMPLE = """\
models:
  - name: gpt-4o                       # the name clients send
    deployments:
      - provider: openai               # also any OpenAI-compatible server via base_url
        model: gpt-4o
        base_url: https://api.openai.com/v1
        api_key: env:OPENAI_API_KEY
  - name: claude
    deployments:
      - provider: anthropic
        model: claude-sonnet-4-5
        base_url: https://api.anthropic.com
        api_key: env:ANTHROPIC_API_KEY
  - name: local
    deployments:
      - provider: llamacpp             # no path: the embedded model
"""


def test_issue_example_loads_and_resolves_secrets() -> None:
    env = {"OPENAI_API_KEY": "sk-test-openai", "ANTHROPIC_API_KEY": "sk-ant-test"}
    config = load_config(ISSUE_EXAMPLE, source="x.yaml", environ=env)
    names = config.model_names()
    assert names[:3] == ["gpt-4o", "claude", "local"]
    gpt = config.models[0]
    assert isinstance(gpt.deployments[0], OpenAIDeployment)
    assert gpt.secrets == ("sk-test-openai",)
    assert isinstance(config.models[1].deployments[0], AnthropicDeployment)
    assert isinstance(config.models[2].deployments[0], LlamaCppDeployment)
    # The embedded embedding model joins; "local" is taken by the config's own entry.
    assert "all-MiniLM-L6-v2" in names
    assert names.count("local") == 1
    assert config.default_model == "local"


def test_zero_config_serves_embedded_models_only() -> None:
    config = load_config(None, environ={})
    assert config.model_names() == ["local", "all-MiniLM-L6-v2"]
    assert config.master_key is None
    assert config.server.port == 4000 and config.server.host == "127.0.0.1"


def test_zero_config_adds_cloud_models_when_keys_are_set() -> None:
    config = load_config(None, environ={"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "sk-ant-y"})
    names = config.model_names()
    assert "gpt-4o" in names and "claude-sonnet-4-5" in names and "text-embedding-3-small" in names
    assert "local" in names


def test_every_problem_is_reported_with_its_line() -> None:
    text = """\
server:
  port: 4000
  bogus: 1
models:
  - name: gpt-4o
    deployments:
      - provider: openai
        model: gpt-4o
        api_key: sk-literal-secret
  - name: claude
    deployments:
      - provider: anthropic
        model: claude-sonnet-4-5
        tmeout: 3
  - name: bad
    deployments:
      - provider: nosuch
"""
    with pytest.raises(ConfigError) as info:
        load_config(text, source="gw.yaml", environ={})
    problems = info.value.problems
    assert any(p.startswith("gw.yaml:3: server.bogus: unknown key") for p in problems)
    assert any(
        p.startswith("gw.yaml:9: models[0].deployments[0].api_key: secrets are references") for p in problems
    )
    assert any(p.startswith("gw.yaml:14: models[1].deployments[0].tmeout: unknown key") for p in problems)
    assert any("gw.yaml:17" in p and "provider" in p for p in problems)
    # The literal secret is never echoed back.
    assert not any("sk-literal-secret" in p for p in problems)


def test_missing_secret_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(ISSUE_EXAMPLE, source="x.yaml", environ={"OPENAI_API_KEY": "sk-a"})
    assert any(
        "ANTHROPIC_API_KEY is not set" in p and "export ANTHROPIC_API_KEY" in p for p in info.value.problems
    )


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("sk-from-file\n")
    text = f"""\
embedded_models: false
models:
  - name: m
    deployments: [{{provider: openai, model: m, base_url: "http://127.0.0.1:1/v1", api_key: "file:{secret}"}}]
"""
    assert load_config(text, environ={}).models[0].secrets == ("sk-from-file",)


def test_duplicate_names_are_rejected() -> None:
    text = """\
models:
  - name: a
    deployments: [{provider: fake}]
  - name: b
    aliases: [a]
    deployments: [{provider: fake}]
"""
    with pytest.raises(ConfigError, match="already used"):
        load_config(text, environ={})


def test_invalid_yaml_and_wrong_top_level() -> None:
    with pytest.raises(ConfigError, match=r"f.yaml:3: not valid YAML"):
        load_config("server:\n  port: 4000\n  host: a: b\n", source="f.yaml", environ={})
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config("- 1\n- 2\n", source="f.yaml", environ={})


def test_master_key_from_env_and_config() -> None:
    assert load_config(None, environ={"MODELYARD_MASTER_KEY": "mk"}).master_key == "mk"
    text = "server:\n  master_key: env:MY_KEY\n"
    assert load_config(text, environ={"MY_KEY": "k2"}).master_key == "k2"


def test_config_file_from_env_var(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("embedded_models: false\nmodels:\n  - name: e\n    deployments: [{provider: fake}]\n")
    config = load_config_file(None, environ={"MODELYARD_CONFIG": str(path)})
    assert config.model_names() == ["e"] and config.source == str(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(tmp_path / "missing.yaml", environ={})
