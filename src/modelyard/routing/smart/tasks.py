"""The task router: which kind of request is this (code, math, extraction, …), and how sure are we.

A nearest-neighbour classifier over each task's example utterances, in the embedded
all-MiniLM-L6-v2 space (unit vectors, so a dot product is the cosine similarity). A task's score
is the mean similarity of the query to its ``k`` nearest examples; the confidence is a softmax of
those scores at a temperature *calibrated* on the examples themselves (leave-one-out: each example
is classified by the others, and the temperature minimising their negative log-likelihood is
kept). A query far from every example (best similarity under ``min_similarity``) is unsure
whatever the softmax says.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]

BUILTIN_EXAMPLES: dict[str, tuple[str, ...]] = {
    "classification": (
        "Classify the sentiment of this review as positive, negative or neutral: it broke in a day.",
        "Is this email spam or not spam? Answer with one word.",
        "Label the topic of this support ticket: billing, shipping, technical or other.",
        "Which category does this product belong to: electronics, clothing, food, toys?",
        "Decide whether the following tweet is hateful. Reply yes or no.",
        "Tag this news headline with one of: politics, sports, business, science.",
        "Is the intent of this message a complaint, a question or praise?",
        "Classify the language of this sentence.",
    ),
    "extraction": (
        "Extract the name, date and amount from this invoice and return JSON.",
        "Pull out every company name mentioned in the following article.",
        "From this email, extract the sender's phone number and the meeting time.",
        "List all the dates that appear in the text below.",
        "Extract the product, quantity and price from this order confirmation as a table.",
        "Find the addresses in this document and return them as a JSON array.",
        "Get the title, authors and year from this citation.",
        "Extract key-value pairs from this form: name, age, city.",
    ),
    "code": (
        "Write a Python function that returns the n-th Fibonacci number.",
        "Fix the bug in this JavaScript: the loop never ends.",
        "Refactor this class to use dependency injection.",
        "Write a SQL query that returns the top 5 customers by revenue.",
        "Why does this Rust code fail to compile with a borrow checker error?",
        "Implement binary search in Go with unit tests.",
        "Convert this bash script to Python.",
        "Explain what this regular expression matches and write a faster one.",
        "How do I fix this error: TypeError: 'NoneType' object is not subscriptable?",
        "My database query is slow; which index should I add?",
        "Write unit tests for this function.",
        "Implement a REST endpoint in TypeScript that returns a list of users.",
    ),
    "math": (
        "Solve for x: 3x + 7 = 22.",
        "A train travels 120 km in 1.5 hours. What is its average speed?",
        "What is the derivative of x^3 * sin(x)?",
        "Tom has 5 apples and buys 3 bags of 4 apples each. How many apples does he have now?",
        "Prove that the square root of 2 is irrational.",
        "Compute the probability of rolling two sixes with two dice.",
        "If a shirt costs $20 after a 20% discount, what was the original price?",
        "Integrate 1/(1+x^2) from 0 to 1.",
    ),
    "summarisation": (
        "Summarise this article in three bullet points.",
        "Give me a one-paragraph summary of the meeting transcript below.",
        "TL;DR of this long email thread, please.",
        "Condense this report into an executive summary of 100 words.",
        "What are the main points of the following text?",
        "Write a short abstract for this paper.",
    ),
    "translation": (
        "Translate this sentence into French: Where is the train station?",
        "Translate the following paragraph from German to English.",
        "How do you say 'thank you very much' in Japanese?",
        "Translate this product description into Spanish, keeping the tone.",
        "Render this legal clause in plain Italian.",
    ),
    "chat": (
        "Hi! How are you today?",
        "Tell me a fun fact about octopuses.",
        "What should I cook for dinner tonight?",
        "Can you recommend a good science fiction book?",
        "I'm feeling a bit bored, any ideas?",
        "Write a short poem about autumn.",
    ),
}
"""Shipped example utterances of well-known task names (used when a task lists none)."""

TEMPERATURES = tuple(0.005 * 1.25**i for i in range(24))
"""The grid the softmax temperature is calibrated over (0.005 … ≈0.85)."""
DEFAULT_TEMPERATURE = 0.05


@dataclass(frozen=True, slots=True)
class TaskGuess:
    task: str | None
    """The task, or None when unsure."""
    best: str
    """The most likely task even when unsure (for reports)."""
    confidence: float
    similarity: float
    """Mean similarity to the best task's nearest examples."""


def examples_for(name: str, examples: Sequence[str]) -> list[str]:
    """The examples of a task: its own, else the built-in ones; ValueError if it has neither."""
    if examples:
        return list(examples)
    if name in BUILTIN_EXAMPLES:
        return list(BUILTIN_EXAMPLES[name])
    raise ValueError(
        f"task {name!r} has no examples; give it `examples: [...]` or use a built-in task name "
        f"({', '.join(BUILTIN_EXAMPLES)})"
    )


def _softmax(scores: npt.NDArray[np.float64], temperature: float) -> npt.NDArray[np.float64]:
    z = scores / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: npt.NDArray[np.float64] = e / e.sum(axis=-1, keepdims=True)
    return out


class TaskClassifier:
    """k-nearest-examples task scores with a calibrated softmax confidence."""

    def __init__(
        self,
        tasks: Sequence[str],
        vectors: Vector,
        labels: Sequence[int],
        *,
        k: int = 3,
        min_confidence: float = 0.5,
        min_similarity: float = 0.15,
    ) -> None:
        self.tasks = list(tasks)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.k = k
        self.min_confidence = min_confidence
        self.min_similarity = min_similarity
        self.temperature = self._calibrate()

    @classmethod
    def build(
        cls,
        examples: Mapping[str, Sequence[str]],
        vectors: Vector,
        *,
        min_confidence: float = 0.5,
    ) -> TaskClassifier:
        """From task → examples and the examples' vectors (in the same order, flattened)."""
        labels = [i for i, (_, texts) in enumerate(examples.items()) for _ in texts]
        return cls(list(examples), vectors, labels, min_confidence=min_confidence)

    def _scores(self, sims: npt.NDArray[np.float32], exclude: int | None = None) -> npt.NDArray[np.float64]:
        out = np.full(len(self.tasks), -1.0)
        for index in range(len(self.tasks)):
            mask = self.labels == index
            if exclude is not None:
                mask = mask.copy()
                mask[exclude] = False
            values = sims[mask]
            if values.size:
                top = np.sort(values)[-self.k :]
                out[index] = float(top.mean())
        return out

    def _calibrate(self) -> float:
        """Leave-one-out temperature: each example classified by the others (NLL minimised)."""
        if len(self.tasks) < 2 or len(self.labels) < 3:
            return DEFAULT_TEMPERATURE
        sims = self.vectors @ self.vectors.T
        rows = np.stack([self._scores(sims[i], exclude=i) for i in range(len(self.labels))])
        best_t, best_nll = DEFAULT_TEMPERATURE, math.inf
        for t in TEMPERATURES:
            p = _softmax(rows, t)[np.arange(len(self.labels)), self.labels]
            nll = float(-np.log(np.clip(p, 1e-9, 1.0)).mean())
            if nll < best_nll:
                best_t, best_nll = t, nll
        return best_t

    def classify(self, vector: Vector) -> TaskGuess:
        sims = self.vectors @ np.asarray(vector, dtype=np.float32)
        scores = self._scores(sims)
        if len(self.tasks) == 1:
            confidence = 1.0 if scores[0] >= self.min_similarity else 0.0
            best = 0
        else:
            probs = _softmax(scores, self.temperature)
            best = int(np.argmax(probs))
            confidence = float(probs[best])
        similarity = float(scores[best])
        sure = confidence >= self.min_confidence and similarity >= self.min_similarity
        return TaskGuess(self.tasks[best] if sure else None, self.tasks[best], confidence, similarity)


__all__ = ["BUILTIN_EXAMPLES", "TaskClassifier", "TaskGuess", "examples_for"]
