"""Pure translation between the OpenAI Chat Completions and Anthropic Messages wire protocols.

Dicts in, dicts out, no I/O: requests, non-streaming responses, and two stateful stream
translators (one per direction) that turn native SSE events of one protocol into the other's.
"""

from modelyard.translate.mapping import (
    map_finish_reason_to_anthropic,
    map_stop_reason_to_openai,
    new_anthropic_id,
    new_openai_id,
)
from modelyard.translate.request_to_anthropic import openai_request_to_anthropic
from modelyard.translate.request_to_openai import anthropic_request_to_openai
from modelyard.translate.responses import anthropic_response_to_openai, openai_response_to_anthropic
from modelyard.translate.stream_anthropic_to_openai import AnthropicToOpenAIStream
from modelyard.translate.stream_openai_to_anthropic import OpenAIToAnthropicStream

__all__ = [
    "AnthropicToOpenAIStream",
    "OpenAIToAnthropicStream",
    "anthropic_request_to_openai",
    "anthropic_response_to_openai",
    "map_finish_reason_to_anthropic",
    "map_stop_reason_to_openai",
    "new_anthropic_id",
    "new_openai_id",
    "openai_request_to_anthropic",
    "openai_response_to_anthropic",
]
