"""The child-process side of :mod:`modelyard.providers.llamacpp`.

A worker is a process started with the ``spawn`` context. It loads one GGUF model and serves one
request at a time over a duplex :class:`multiprocessing.connection.Connection`. Everything it
sends is a plain tuple (pickled by the connection):

parent → worker
    ``("generate", request_id, params)``  generate a chat completion, streaming deltas back
    ``("count", request_id, messages)``   apply the chat template and count the prompt tokens
    ``("cancel", request_id)``            stop generating for that request as soon as possible
    ``("shutdown",)``                     leave the serve loop and exit

worker → parent
    ``("ready", n_ctx, template_supports_tools)`` / ``("load_error", message)``   once, after loading
    ``("delta", request_id, text)``                      one generated piece, as it is sampled
    ``("done", request_id, finish_reason, prompt_tokens, completion_tokens)``
    ``("count", request_id, n_tokens)``
    ``("error", request_id, code, message)``  code: ``context_length_exceeded``, ``invalid`` or
    ``internal``

Nothing in this module runs at import time; only :func:`worker_main` touches llama.cpp, and it
runs in the child.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

# A compact JSON grammar for ``response_format: {"type": "json_object"}``. llama.cpp's own
# JSON_GBNF allows runs of newlines and indentation, which a small model happily spends its
# token budget on; this one allows at most one space after ``:`` and ``,``.
COMPACT_JSON_GBNF = r"""
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null")
object ::= "{" ( string ":" " "? value ( "," " "? string ":" " "? value )* )? "}"
array  ::= "[" ( value ( "," " "? value )* )? "]"
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\""
number ::= "-"? ( [0-9] | [1-9] [0-9]{0,15} ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]{1,4} )?
"""


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What a worker needs to load its model (pickled to the child)."""

    model_path: str
    n_ctx: int
    n_threads: int | None


@dataclass(frozen=True, slots=True)
class GenerateParams:
    """One generation request, already validated and normalized by the parent.

    ``grammar`` is ``None`` (free text), ``("json", None)`` (any JSON object) or
    ``("json_schema", schema_json)`` (JSON matching that schema).
    """

    messages: list[dict[str, Any]]
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    stop: list[str] | None
    seed: int | None
    presence_penalty: float | None
    frequency_penalty: float | None
    grammar: tuple[str, str | None] | None


class _Cancelled(Exception):
    """The parent asked to stop the current request (or to shut down)."""


class _Shutdown(_Cancelled):
    """A shutdown arrived while generating."""


@contextlib.contextmanager
def _without_extra_buffer_types() -> Iterator[None]:
    """Load models with ``use_extra_bufts = False``.

    The portable llama.cpp build repacks Q4 weights into an "extra" CPU buffer type on CPUs with
    AVX-512/AMX, and its batched matmul on those buffers segfaults on prompts of more than one
    token. ``Llama()`` exposes no argument for the flag, so the defaults are patched for the
    duration of the constructor, in this worker process only.
    """
    # ``Llama.__init__`` looks the function up on this module at call time.
    low_level: Any = importlib.import_module("llama_cpp.llama_cpp")
    original = low_level.llama_model_default_params

    def patched() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    low_level.llama_model_default_params = patched
    try:
        yield
    finally:
        low_level.llama_model_default_params = original


class _Engine:
    """The loaded model plus the chat formatter read from its GGUF metadata."""

    def __init__(self, config: WorkerConfig) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        with _without_extra_buffer_types():
            # Any: llama-cpp-python's TypedDict annotations do not fit the dicts we pass.
            self.llama: Any = Llama(
                model_path=config.model_path,
                n_ctx=config.n_ctx,
                n_threads=config.n_threads,
                n_threads_batch=config.n_threads,
                verbose=False,
            )
        template = self.llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise RuntimeError(
                f"{config.model_path} has no tokenizer.chat_template in its metadata; "
                "use a chat (instruct) GGUF"
            )
        # Templates that never mention tools render a "tool" role as a bare role name at best.
        self.template_supports_tools = "tool" in template
        # The same formatter (and special tokens) that Llama's default chat handler builds.
        self.formatter: Any = Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(self.llama.token_eos()),
            bos_token=self._token_text(self.llama.token_bos()),
        )

    def _token_text(self, token_id: int) -> str:
        if token_id < 0:
            return ""
        return bytes(self.llama.detokenize([token_id], special=True)).decode("utf-8", errors="replace")

    @property
    def n_ctx(self) -> int:
        return int(self.llama.n_ctx())

    def count_prompt_tokens(self, messages: list[dict[str, Any]]) -> int:
        """Apply the chat template (with the generation prompt) and tokenize, as generation does."""
        result = self.formatter(messages=messages)
        tokens = self.llama.tokenize(
            result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
        )
        return len(tokens)

    def _grammar(self, spec: tuple[str, str | None] | None) -> Any:
        from llama_cpp.llama_grammar import LlamaGrammar

        if spec is None:
            return None
        kind, schema = spec
        if kind == "json_schema" and schema is not None:
            with contextlib.suppress(Exception):
                return LlamaGrammar.from_json_schema(schema, verbose=False)
            # A schema the converter cannot express still gets valid (if unconstrained) JSON.
        return LlamaGrammar.from_string(COMPACT_JSON_GBNF, verbose=False)

    def generate(self, conn: Connection, request_id: int, params: GenerateParams) -> None:
        prompt_tokens = self.count_prompt_tokens(params.messages)
        if prompt_tokens >= self.n_ctx:
            conn.send(
                (
                    "error",
                    request_id,
                    "context_length_exceeded",
                    f"the prompt is {prompt_tokens} tokens but this model's context window (n_ctx) "
                    f"is {self.n_ctx} tokens, and it needs room for at least one generated token; "
                    "shorten the messages or raise n_ctx",
                )
            )
            return
        room = self.n_ctx - prompt_tokens
        max_tokens = room if params.max_tokens is None else min(params.max_tokens, room)
        kwargs: dict[str, Any] = {
            "messages": params.messages,
            "max_tokens": max_tokens,
            "stream": True,
            "grammar": self._grammar(params.grammar),
        }
        optional = {
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stop": params.stop,
            "seed": params.seed,
            "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty,
        }
        kwargs.update({key: value for key, value in optional.items() if value is not None})
        finish_reason = "stop"
        chunks: Any = self.llama.create_chat_completion(**kwargs)
        try:
            for chunk in chunks:
                choice = chunk["choices"][0]
                text = choice["delta"].get("content")
                if text:
                    conn.send(("delta", request_id, text))
                if choice.get("finish_reason"):
                    finish_reason = choice["finish_reason"]
                _check_cancel(conn, request_id)
        except _Shutdown:
            raise
        except _Cancelled:
            finish_reason = "cancelled"
        finally:
            chunks.close()
        generated = self.llama.n_tokens - prompt_tokens
        # On "length" the last sampled token is returned but never evaluated into the context.
        completion_tokens = max(0, generated + (1 if finish_reason == "length" else 0))
        conn.send(("done", request_id, finish_reason, prompt_tokens, completion_tokens))


def _check_cancel(conn: Connection, request_id: int) -> None:
    """Raise :class:`_Cancelled` if the parent asked to stop this request or to shut down."""
    while conn.poll():
        message = conn.recv()
        if message[0] == "shutdown":
            raise _Shutdown
        if message[0] == "cancel" and message[1] == request_id:
            raise _Cancelled


def worker_main(conn: Connection, config: WorkerConfig) -> None:
    """The worker process's entry point: load the model, then serve until shutdown or EOF."""
    try:
        engine = _Engine(config)
    except Exception as exc:
        conn.send(("load_error", f"{type(exc).__name__}: {exc}"))
        conn.close()
        return
    conn.send(("ready", engine.n_ctx, engine.template_supports_tools))
    try:
        _serve(conn, engine)
    except (EOFError, OSError, KeyboardInterrupt):
        pass  # the parent went away: nothing left to serve
    finally:
        conn.close()


def _serve(conn: Connection, engine: _Engine) -> None:
    while True:
        message = conn.recv()
        kind = message[0]
        if kind == "shutdown":
            return
        if kind == "cancel":
            continue  # a cancel for a request that already finished
        request_id = message[1]
        try:
            if kind == "generate":
                engine.generate(conn, request_id, message[2])
            elif kind == "count":
                conn.send(("count", request_id, engine.count_prompt_tokens(message[2])))
            else:
                conn.send(("error", request_id, "internal", f"unknown worker command {kind!r}"))
        except _Shutdown:
            return
        except (EOFError, OSError):
            raise
        except Exception as exc:
            # Template errors (e.g. a role the template rejects) and sampling errors: report them
            # to the caller and keep serving.
            conn.send(("error", request_id, "invalid", f"llama.cpp rejected the request: {exc}"))
