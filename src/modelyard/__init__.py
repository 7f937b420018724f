"""modelyard: an AI gateway that serves OpenAI- and Anthropic-API clients from one fleet of models."""

__version__ = "0.1.0"
