"""Content helpers shared by the request translators: images, data URLs, text parts."""

from __future__ import annotations

from typing import Any

from modelyard.errors import InvalidRequestError
from modelyard.providers.base import JSONDict

_DATA_URL_PREFIX = "data:"


def is_data_url(url: str) -> bool:
    return url.startswith(_DATA_URL_PREFIX)


def parse_base64_data_url(url: str, *, where: str) -> tuple[str, str]:
    """Split ``data:<media type>;base64,<data>`` into (media type, data).

    Raises InvalidRequestError naming ``where`` when the URL is not base64-encoded.
    """
    header, sep, data = url.partition(",")
    params = header[len(_DATA_URL_PREFIX) :].split(";")
    if not sep or "base64" not in params[1:]:
        raise InvalidRequestError(
            f"{where}: only base64 data URLs are supported (data:<media type>;base64,<data>); "
            "encode the image as base64 or pass an https URL"
        )
    media_type = params[0] or "application/octet-stream"
    return media_type, data


def anthropic_image_to_openai_url(block: JSONDict, *, where: str) -> str:
    """The ``image_url.url`` for an Anthropic image block (base64 -> data: URL, url -> url)."""
    source = block.get("source")
    if not isinstance(source, dict):
        raise InvalidRequestError(f"{where}: an image block needs a 'source' object")
    kind = source.get("type")
    if kind == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    if kind == "url":
        return str(source.get("url", ""))
    raise InvalidRequestError(
        f"{where}: image source type {kind!r} cannot be sent to an OpenAI-format model; "
        "send the image as base64 or as a URL"
    )


def openai_image_to_anthropic(part: JSONDict, *, where: str) -> JSONDict:
    """An OpenAI ``image_url`` content part -> an Anthropic image block."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise InvalidRequestError(f"{where}: an image_url part needs image_url.url (a data: or https URL)")
    if is_data_url(url):
        media_type, data = parse_base64_data_url(url, where=where)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequestError(f"{where}: image URL must be a base64 data: URL or an http(s) URL")


def openai_text_of(content: Any, *, where: str) -> str:
    """The text of OpenAI message content that may only hold text (system, developer, tool).

    ``content`` is a string, ``None``, or a list of ``{"type": "text", "text": ...}`` parts, which
    are joined without separator (they are pieces of one text).
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, dict) and part.get("type") in ("text", "refusal"):
                texts.append(str(part.get("text", part.get("refusal", ""))))
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise InvalidRequestError(
                    f"{where}: content part of type {kind!r} is not allowed here; send text parts only"
                )
        return "".join(texts)
    raise InvalidRequestError(f"{where}: content must be a string or a list of content parts")
