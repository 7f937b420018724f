"""Per-prompt, per-model quality labels for training and evaluating strong-vs-weak routers.

Accepted inputs (:func:`load_labels` picks by what the path is):

* a **RouteLLM MMLU folder**: ``mmlu_<subject>.csv`` files with a ``prompt`` column and one
  ``True``/``False`` column per model; the subject becomes each prompt's group;
* a **RouteLLM GSM8K folder** or any **CSV** with ``prompt`` and per-model score columns
  (``True``/``False``, ``1``/``0`` or a number in [0, 1]); ``<model>_response`` columns, when
  present, give output lengths and are not models;
* a **JSONL** file of ``{"prompt": "...", "scores": {"<model>": 0..1, ...}}`` lines, optionally with
  ``"group"`` (a task or source name) and ``"output_tokens": {"<model>": n}``. A line may score
  only some of the models (feedback scores the model that answered): the others are *unobserved*
  (NaN in :attr:`LabelSet.scores`) and the set is :attr:`~LabelSet.partial`.

A ``contaminated_prompts.jsonl`` beside the data (RouteLLM's list of prompts that leaked into
published routers' training data) drops those prompts; the count dropped is reported.
"""

from __future__ import annotations

import csv
import hashlib
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson

__all__ = ["LabelError", "LabelSet", "for_pair", "load_labels", "pick_pair"]

CONTAMINATED_FILE = "contaminated_prompts.jsonl"
_RESPONSE_SUFFIX = "_response"
_NON_MODEL_COLUMNS = {"prompt", "group", "subject", "category", "source", "id", "prompt_id"}


class LabelError(ValueError):
    """A label file is missing, malformed or unusable; the message names the file and the fix."""


@dataclass(frozen=True)
class LabelSet:
    """Prompts with a quality score in [0, 1] for each of two or more models."""

    prompts: list[str]
    scores: dict[str, npt.NDArray[np.float64]]
    """Model name → one score per prompt (1.0 = correct / best; NaN = not observed)."""
    groups: list[str]
    """Per prompt: its subject / task / source ("" when unknown)."""
    source: str
    """Where the labels came from (a path), for the router file's metadata."""
    output_tokens: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    """Model name → output tokens per prompt, where the data has responses."""
    dropped_contaminated: int = 0

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def models(self) -> list[str]:
        return list(self.scores)

    @property
    def partial(self) -> bool:
        """True when some prompt lacks a score for some model (NaN)."""
        return any(bool(np.isnan(s).any()) for s in self.scores.values())

    def mean_score(self, model: str) -> float:
        """The model's mean over the prompts it has a score for (NaN: none)."""
        observed = self.scores[model][~np.isnan(self.scores[model])]
        return float(observed.mean()) if len(observed) else float("nan")

    def subset(self, index: npt.NDArray[np.int64] | Sequence[int]) -> LabelSet:
        rows = np.asarray(index, dtype=np.int64)
        return replace(
            self,
            prompts=[self.prompts[i] for i in rows],
            scores={m: s[rows] for m, s in self.scores.items()},
            groups=[self.groups[i] for i in rows],
            output_tokens={m: t[rows] for m, t in self.output_tokens.items()},
        )

    def fingerprint(self) -> str:
        """A short hash of the prompts and labels, recorded in router files and results."""
        digest = hashlib.sha256()
        for prompt in self.prompts:
            digest.update(prompt.encode())
            digest.update(b"\0")
        for model in sorted(self.scores):
            digest.update(model.encode())
            digest.update(self.scores[model].tobytes())
        return digest.hexdigest()[:16]


def pick_pair(labels: LabelSet, strong: str | None, weak: str | None) -> tuple[str, str]:
    """The (strong, weak) model pair: as named, else the better- and worse-scoring of two models."""
    models = labels.models
    for name, role in ((strong, "--strong"), (weak, "--weak")):
        if name is not None and name not in labels.scores:
            raise LabelError(
                f"{role} {name!r} is not a model in {labels.source}; its models are: {', '.join(models)}"
            )
    if strong is not None and weak is not None:
        if strong == weak:
            raise LabelError(f"--strong and --weak are both {strong!r}; name two different models")
        return strong, weak
    if len(models) != 2 and (strong is None or weak is None):
        raise LabelError(
            f"{labels.source} has {len(models)} models ({', '.join(models)}); "
            "name the pair with --strong and --weak"
        )
    if strong is not None:
        return strong, next(m for m in models if m != strong)
    if weak is not None:
        return next(m for m in models if m != weak), weak
    first, second = models
    if labels.partial:
        if labels.mean_score(first) >= labels.mean_score(second):
            return first, second
        return second, first
    if labels.scores[first].mean() >= labels.scores[second].mean():
        return first, second
    return second, first


def for_pair(labels: LabelSet, strong: str, weak: str) -> LabelSet:
    """Partial labels cut to the pair: only its two models, only prompts scoring at least one of
    them. Complete labels are returned as they are (their fingerprint and router file unchanged)."""
    if not labels.partial:
        return labels
    keep = np.flatnonzero(~(np.isnan(labels.scores[strong]) & np.isnan(labels.scores[weak])))
    pair = replace(
        labels,
        scores={m: labels.scores[m] for m in (strong, weak)},
        output_tokens={m: t for m, t in labels.output_tokens.items() if m in (strong, weak)},
    ).subset(keep)
    for model in (strong, weak):
        if not (~np.isnan(pair.scores[model])).any():
            raise LabelError(
                f"{labels.source} has no score for {model!r}; the router needs scores for both "
                "models (with feedback: send some traffic to each, e.g. bandit exploration)"
            )
    return pair


def load_labels(path: str | Path, *, drop_contaminated: bool = True) -> LabelSet:
    """Load labels from a folder of CSVs, a CSV file or a JSONL file (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise LabelError(
            f"{path}: no such file or folder; pass a RouteLLM data folder, a CSV or a JSONL file"
        )
    if path.is_dir():
        files = sorted(path.glob("*.csv"))
        if not files:
            raise LabelError(
                f"{path}: a folder with no .csv label files; expected e.g. mmlu_<subject>.csv files "
                "or gsm8k_responses.csv (columns: prompt, then one column per model)"
            )
        parts = [_read_csv(file, group=_group_from_name(file, len(files))) for file in files]
        labels = _concat(parts, source=str(path))
        contaminated = path / CONTAMINATED_FILE
    elif path.suffix.lower() in (".jsonl", ".ndjson"):
        labels = _read_jsonl(path)
        contaminated = path.parent / CONTAMINATED_FILE
    elif path.suffix.lower() in (".csv", ".tsv"):
        labels = _read_csv(path, group="")
        contaminated = path.parent / CONTAMINATED_FILE
    else:
        raise LabelError(
            f"{path}: unknown label format {path.suffix!r}; use a folder of CSVs, .csv or .jsonl"
        )
    if drop_contaminated and contaminated.is_file() and contaminated != path:
        labels = _drop(labels, _read_contaminated(contaminated))
    if len(labels) < 2:
        raise LabelError(f"{path}: only {len(labels)} labelled prompt(s); a router needs many more")
    return labels


def _group_from_name(file: Path, count: int) -> str:
    stem = file.stem
    if count == 1:
        return ""
    for prefix in ("mmlu_",):
        if stem.startswith(prefix):
            return stem[len(prefix) :]
    return stem


def _parse_score(raw: str, file: Path, line: int, column: str) -> float:
    text = raw.strip()
    lowered = text.lower()
    if lowered == "true":
        return 1.0
    if lowered == "false":
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise LabelError(
            f"{file}:{line}: column {column!r} holds {text[:40]!r}; model columns must be True/False or a "
            "number in [0, 1]"
        ) from None
    if not 0.0 <= value <= 1.0 or value != value:
        raise LabelError(f"{file}:{line}: column {column!r} holds {value}; scores must lie in [0, 1]")
    return value


def _read_csv(file: Path, *, group: str) -> LabelSet:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    delimiter = "\t" if file.suffix.lower() == ".tsv" else ","
    try:
        with file.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            columns = list(reader.fieldnames or [])
            if "prompt" not in columns:
                raise LabelError(
                    f"{file}: no 'prompt' column (columns: {', '.join(columns) or 'none'}); the first "
                    "line must name the columns: prompt, then one quality column per model"
                )
            responses = {c[: -len(_RESPONSE_SUFFIX)] for c in columns if c.endswith(_RESPONSE_SUFFIX)}
            models = [
                c
                for c in columns
                if c and c.lower() not in _NON_MODEL_COLUMNS and not c.endswith(_RESPONSE_SUFFIX)
            ]
            if len(models) < 2:
                raise LabelError(
                    f"{file}: {len(models)} model column(s) ({', '.join(models) or 'none'}); a router "
                    "needs quality labels for at least two models"
                )
            group_column = next((c for c in ("group", "subject", "category") if c in columns), None)
            prompts: list[str] = []
            groups: list[str] = []
            scores: dict[str, list[float]] = {m: [] for m in models}
            lengths: dict[str, list[float]] = {m: [] for m in models if m in responses}
            for line, row in enumerate(reader, start=2):
                prompt = row.get("prompt")
                if prompt is None or not prompt.strip():
                    raise LabelError(f"{file}:{line}: empty prompt")
                prompts.append(prompt)
                groups.append((row.get(group_column) or "") if group_column else group)
                for model in models:
                    value = row.get(model)
                    if value is None or value.strip() == "":
                        raise LabelError(f"{file}:{line}: no score for model {model!r}")
                    scores[model].append(_parse_score(value, file, line, model))
                for model in lengths:
                    lengths[model].append(float(_approx_tokens(row.get(model + _RESPONSE_SUFFIX) or "")))
    except UnicodeDecodeError as exc:
        raise LabelError(f"{file}: not UTF-8 text ({exc.reason}); save the CSV as UTF-8") from None
    except csv.Error as exc:
        raise LabelError(f"{file}: not a valid CSV file ({exc})") from None
    return LabelSet(
        prompts=prompts,
        scores={m: np.asarray(v, dtype=np.float64) for m, v in scores.items()},
        groups=groups,
        source=str(file),
        output_tokens={m: np.asarray(v, dtype=np.float64) for m, v in lengths.items()},
    )


def _approx_tokens(text: str) -> int:
    from modelyard.routing.smart.learned.cost import count_tokens

    return count_tokens(text)


def _read_jsonl(file: Path) -> LabelSet:
    prompts: list[str] = []
    groups: list[str] = []
    rows: list[dict[str, float]] = []
    lengths: list[dict[str, float]] = []
    try:
        text = file.read_bytes()
    except OSError as exc:
        raise LabelError(f"{file}: cannot read it ({exc.strerror})") from None
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise LabelError(f"{file}:{line_no}: not valid JSON ({exc})") from None
        if not isinstance(item, dict):
            raise LabelError(f"{file}:{line_no}: each line must be a JSON object with 'prompt' and 'scores'")
        prompt, scores = item.get("prompt"), item.get("scores")
        if not isinstance(prompt, str) or not prompt.strip():
            raise LabelError(f"{file}:{line_no}: 'prompt' must be a non-empty string")
        if not isinstance(scores, dict) or not scores:
            raise LabelError(
                f'{file}:{line_no}: \'scores\' must be an object like {{"model-a": 1, "model-b": 0}}'
            )
        parsed: dict[str, float] = {}
        for model, value in scores.items():
            if isinstance(value, bool):
                value = float(value)
            if not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
                raise LabelError(
                    f"{file}:{line_no}: score for {model!r} is {value!r}; scores must be numbers in [0, 1]"
                )
            parsed[str(model)] = float(value)
        out = item.get("output_tokens") or {}
        if not isinstance(out, dict):
            raise LabelError(f"{file}:{line_no}: 'output_tokens' must be an object of model → count")
        prompts.append(prompt)
        groups.append(str(item.get("group") or ""))
        rows.append(parsed)
        lengths.append({str(k): float(v) for k, v in out.items()})
    if not rows:
        raise LabelError(f'{file}: no labelled lines; each line is {{"prompt": ..., "scores": {{...}}}}')
    models = list(dict.fromkeys(m for row in rows for m in row))  # first seen first
    if len(models) < 2:
        raise LabelError(f"{file}: only one model ({models[0]}) is scored; a router needs at least two")
    unobserved = float("nan")  # partial labels: this line does not score this model
    output = {
        m: np.asarray([r[m] for r in lengths], dtype=np.float64)
        for m in models
        if all(m in r for r in lengths)
    }
    return LabelSet(
        prompts=prompts,
        scores={m: np.asarray([r.get(m, unobserved) for r in rows], dtype=np.float64) for m in models},
        groups=groups,
        source=str(file),
        output_tokens=output,
    )


def _concat(parts: Iterable[LabelSet], *, source: str) -> LabelSet:
    parts = list(parts)
    models = parts[0].models
    for part in parts[1:]:
        if part.models != models:
            raise LabelError(
                f"{part.source}: model columns {part.models} differ from {parts[0].source}'s {models}"
            )
    shared_lengths = [m for m in models if all(m in p.output_tokens for p in parts)]
    return LabelSet(
        prompts=[p for part in parts for p in part.prompts],
        scores={m: np.concatenate([part.scores[m] for part in parts]) for m in models},
        groups=[g for part in parts for g in part.groups],
        source=source,
        output_tokens={m: np.concatenate([part.output_tokens[m] for part in parts]) for m in shared_lengths},
    )


def _read_contaminated(file: Path) -> set[str]:
    found: set[str] = set()
    for line_no, line in enumerate(file.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise LabelError(f"{file}:{line_no}: not valid JSON ({exc})") from None
        prompt = item.get("eval_prompt") if isinstance(item, dict) else None
        if isinstance(prompt, str):
            found.add(prompt)
    return found


def _drop(labels: LabelSet, prompts: set[str]) -> LabelSet:
    if not prompts:
        return labels
    keep = [i for i, p in enumerate(labels.prompts) if p not in prompts]
    dropped = len(labels) - len(keep)
    return replace(labels.subset(keep), dropped_contaminated=dropped)
