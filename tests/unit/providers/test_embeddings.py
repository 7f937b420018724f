"""OnnxEmbeddingProvider against the real int8 all-MiniLM-L6-v2 ONNX model."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio

from modelyard.errors import InvalidRequestError, UnsupportedCapabilityError
from modelyard.providers.base import CallContext
from modelyard.providers.embeddings import OnnxEmbeddingProvider

pytestmark = [pytest.mark.localmodel, pytest.mark.asyncio(loop_scope="module")]

CTX = CallContext("req-embed")
MODEL = "all-minilm-l6-v2"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def provider() -> AsyncIterator[OnnxEmbeddingProvider]:
    embedder = OnnxEmbeddingProvider()
    await embedder.start()
    yield embedder
    await embedder.aclose()


async def test_dimensions_and_norm(provider: OnnxEmbeddingProvider) -> None:
    result = await provider.embed(["hello world", "a second input"], MODEL, CTX)
    vectors = np.array(result.vectors)
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert result.prompt_tokens == 4 + 5  # [CLS] hello world [SEP] / [CLS] a second input [SEP]


async def test_similar_sentences_are_closer(provider: OnnxEmbeddingProvider) -> None:
    texts = ["The cat sits on the mat.", "A kitten is resting on a rug.", "Quarterly revenue rose by 12%."]
    cat, kitten, revenue = np.array((await provider.embed(texts, MODEL, CTX)).vectors)
    assert cat @ kitten > 0.5
    assert cat @ kitten > cat @ revenue + 0.3


async def test_batch_equals_singles(provider: OnnxEmbeddingProvider) -> None:
    texts = ["short", "a somewhat longer sentence about trains", "x " * 400, "émojis 🙂 and ünïcode"]
    batch = np.array((await provider.embed(texts, MODEL, CTX)).vectors)
    singles = np.array([(await provider.embed([t], MODEL, CTX)).vectors[0] for t in texts])
    assert np.allclose(batch, singles, atol=1e-4)


async def test_long_input_is_truncated(provider: OnnxEmbeddingProvider) -> None:
    result = await provider.embed(["word " * 1000], MODEL, CTX)
    assert result.prompt_tokens == 256


async def test_token_arrays_rejected(provider: OnnxEmbeddingProvider) -> None:
    with pytest.raises(InvalidRequestError, match="token-id arrays"):
        await provider.embed([[1, 2, 3]], MODEL, CTX)  # type: ignore[list-item]


async def test_chat_is_unsupported(provider: OnnxEmbeddingProvider) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(UnsupportedCapabilityError, match="/v1/embeddings"):
        await provider.complete(body, CTX)
    with pytest.raises(UnsupportedCapabilityError):
        await anext(provider.stream(body, CTX))
