"""The ``routes:`` section: checked against the served models with file:line errors that say how to
fix them, and the zero-config ``auto`` route."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.config.load import load_config
from modelyard.errors import ConfigError

MODELS = """\
embedded_models: false
cloud_models_from_env: false
models:
  - name: small
    deployments: [{provider: fake, model: echo, tags: [local]}]
  - name: big
    deployments: [{provider: fake, model: echo}]
  - name: vectors
    deployments: [{provider: onnx-embeddings}]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(MODELS + text, source="gw.yaml", environ={})
    return info.value.problems


def test_a_valid_route_loads() -> None:
    config = load_config(
        MODELS
        + """\
routes:
  cheap:
    candidates: [small, big]
    quality_target: 0.9
    tasks:
      extraction: {model: small}
      legal: {examples: ["Review this contract clause"], model: big}
    fallback: big
    rules: [{when: {pii: [email]}, action: local_only}]
    embeddings: vectors
""",
        source="gw.yaml",
        environ={},
    )
    assert set(config.routes) == {"cheap", "auto"}
    assert config.routes["cheap"].tasks["legal"].model == "big"


def test_a_candidate_that_is_not_served_names_its_line_and_the_served_models() -> None:
    found = problems("routes:\n  r:\n    candidates: [small, gpt-9]\n")
    assert found == ["gw.yaml:12: candidate 'gpt-9' is not a served chat model; served: big, small"]


def test_an_embedding_model_cannot_be_a_chat_candidate() -> None:
    assert "'vectors' is not a served chat model" in problems("routes:\n  r: {candidates: [vectors]}\n")[0]


def test_a_route_cannot_take_a_model_name() -> None:
    found = problems("routes:\n  big: {candidates: [small]}\n")
    assert found == ["gw.yaml:11: route 'big' has the name of a served model; rename the route or the model"]


def test_task_fallback_and_router_models_must_be_candidates() -> None:
    found = problems(
        """\
routes:
  r:
    candidates: [small]
    tasks: {code: {model: big}}
    fallback: big
    router: {file: missing.json, strong: big, weak: small}
"""
    )
    assert "gw.yaml:13: task 'code' model 'big' is not one of the route's candidates" in found
    assert "gw.yaml:14: fallback 'big' is not one of the route's candidates" in found
    assert "gw.yaml:15: router strong model 'big' is not one of the route's candidates" in found
    assert any("router file" in p and "modelyard router train" in p for p in found)


def test_a_custom_task_needs_examples_and_rules_need_conditions() -> None:
    found = problems("routes:\n  r:\n    tasks: {legal: {model: small}}\n")
    assert "task 'legal' has no examples" in found[0] and "built-in task name" in found[0]
    found = problems("routes:\n  r:\n    rules: [{when: {}, action: local_only}]\n")
    assert "a rule needs at least one condition" in found[0]
    found = problems("routes:\n  r:\n    rules: [{when: {tags: [x]}, action: restrict}]\n")
    assert "action: restrict needs `models: [...]`" in found[0]


def test_unknown_keys_and_bad_knobs_are_refused() -> None:
    assert "unknown key" in problems("routes:\n  r: {candidats: [small]}\n")[0]
    assert "quality_target" in problems("routes:\n  r: {quality_target: 1.5}\n")[0]
    assert "within 0..1" in problems("routes:\n  r: {quality: {small: 2}}\n")[0]


def test_zero_config_has_an_auto_route_over_the_chat_models() -> None:
    config = load_config(MODELS, environ={})
    auto = config.routes["auto"]
    assert auto.candidates == ["small", "big"]
    assert auto.embeddings == "vectors"
    plain = load_config(None, environ={})  # only the embedded local model: auto is just "local"
    assert plain.routes["auto"].candidates == ["local"] and plain.routes["auto"].tasks == {}
    cloud = load_config(None, environ={"OPENAI_API_KEY": "sk-x"})
    assert cloud.routes["auto"].tasks["extraction"].model == "local"
    assert "gpt-4o" in cloud.routes["auto"].candidates


def test_auto_route_can_be_turned_off_or_replaced() -> None:
    assert "auto" not in load_config(MODELS + "auto_route: false\n", environ={}).routes
    replaced = load_config(MODELS + "routes:\n  auto: {candidates: [big]}\n", environ={})
    assert replaced.routes["auto"].candidates == ["big"]
    named = load_config(MODELS.replace("name: big", "name: auto"), environ={})
    assert "auto" not in named.routes  # a model called auto wins


def test_check_config_shows_routes_and_their_problems(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from modelyard.cli import app

    good = tmp_path / "good.yaml"
    good.write_text(
        MODELS + "routes:\n  r: {candidates: [small, big], tasks: {extraction: {model: small}}}\n"
    )
    result = CliRunner().invoke(app, ["check-config", str(good)])
    assert result.exit_code == 0, result.output
    assert "route r -> small, big (quality_target 0.7; tasks: extraction->small; rules: 0)" in result.output
    assert "route auto -> small, big" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(MODELS + "routes:\n  r: {candidates: [nope]}\n")
    result = CliRunner().invoke(app, ["check-config", str(bad)])
    assert result.exit_code != 0
    assert "bad.yaml:11: candidate 'nope' is not a served chat model" in result.output
