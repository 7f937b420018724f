"""The HTTP API: OpenAI- and Anthropic-compatible routes over a pure ASGI core."""
