"""What a route embeds of a prompt: its router file's window, else the route's ``prompt_input``.

Bad input: ``prompt_input`` other than ``window``/``full`` is a config error naming the field.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
from pydantic import ValidationError

from modelyard.config.routes_schema import RouteConfig
from modelyard.providers.embeddings import TokenWindow
from modelyard.routing.smart.learned.features import DEFAULT_WINDOW
from modelyard.routing.smart.routes import Route
from modelyard.routing.smart.service import _window


def _route(config: RouteConfig, learned: Any = None) -> Route:
    return cast(Route, SimpleNamespace(config=config, learned=learned))


def test_a_task_route_reads_the_bounded_window_by_default() -> None:
    config = RouteConfig(tasks={"math": {"examples": ["What is 2 + 2?"]}})
    assert config.prompt_input == "window"
    assert _window(_route(config)) == DEFAULT_WINDOW


def test_a_task_route_may_read_the_full_prompt() -> None:
    config = RouteConfig(prompt_input="full", tasks={"math": {"examples": ["What is 2 + 2?"]}})
    assert _window(_route(config)) is None


@pytest.mark.parametrize("prompt_input", ["window", "full"])
def test_a_router_file_decides_whatever_the_route_says(prompt_input: str) -> None:
    config = RouteConfig.model_validate({"prompt_input": prompt_input})
    trained_full = SimpleNamespace(window=None)
    trained_window = SimpleNamespace(window=TokenWindow(head=40, tail=20))
    assert _window(_route(config, trained_full)) is None
    assert _window(_route(config, trained_window)) == TokenWindow(head=40, tail=20)


def test_an_unknown_prompt_input_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="prompt_input"):
        RouteConfig.model_validate({"prompt_input": "everything"})
