"""Learned strong-vs-weak routing on the shipped RouteLLM labels, task classification, router cost.

Runs on ``../shared/data/routing`` (GPT-4-1106 vs Mixtral-8x7B correctness labels; never copied
into the repo) and measures:

1. MMLU, 5-fold cross-fitting, contaminated prompts dropped: the learned router against every
   baseline (always-weak/strong, random, oracle, prompt length, TF-IDF kNN, subject prior), APGR and
   CPT(20/50/80%) both ways with 1,000-resample bootstrap 95% CIs;
2. GSM8K, the same;
3. out of domain: trained on all of MMLU, tested on GSM8K;
4. task classification: MMLU subjects in coarse groups (stem / humanities / social / other, and
   MMLU's math subjects with GSM8K as ``math``), a few labelled examples per task, the rest test:
   accuracy and macro-F1 with bootstrap CIs, using the smart router's own task classifier
   (``modelyard.routing.smart.tasks.TaskClassifier``) on the same MiniLM vectors;
5. decision cost: embedding one prompt + scoring it (p50/p99), scoring alone, router file size and
   the memory the router adds.

Every part uses the router's default representation (MiniLM over the first 254 word pieces), the
task classifier included; ``--window``: the bounded one (MiniLM over the first 48 and last 14 word
pieces, plus an IDF-weighted static bag and word-piece TF-IDF heads over all of them; ``router
train --input window``).

Usage (embeddings are cached in benchmarks/out/cache; the first run embeds ~15k prompts, which
takes 10-30 minutes on a shared 2-core machine, later runs take a few minutes)::

    .venv/bin/python benchmarks/routing_eval.py            # all of the above
    .venv/bin/python benchmarks/routing_eval.py --quick    # 200 resamples, for a smoke run
    .venv/bin/python benchmarks/routing_eval.py --window --out-name routing_eval_window

Writes benchmarks/out/routing_eval.json, docs/img/router-*.png and prints Markdown for RESULTS.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "routing"
OUT = REPO / "benchmarks" / "out"
IMG = REPO / "docs" / "img"
os.environ.setdefault("MODELYARD_CACHE_DIR", str(OUT / "cache"))

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from modelyard.providers.embeddings import TokenWindow  # noqa: E402
from modelyard.routing.smart.learned.cost import PairPrices, resolve_price  # noqa: E402
from modelyard.routing.smart.learned.data import LabelSet, load_labels  # noqa: E402
from modelyard.routing.smart.learned.evaluate import EvalReport, evaluate  # noqa: E402
from modelyard.routing.smart.learned.features import (  # noqa: E402
    DEFAULT_REPRESENTATION,
    WINDOWED,
    Representation,
    embed_texts,
)
from modelyard.routing.smart.learned.train import TrainConfig  # noqa: E402

STRONG = "gpt-4-1106-preview"
WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
# 2024 list prices of the labelled pair, $ per Mtok (input, output): GPT-4 Turbo (gpt-4-1106-preview)
# at OpenAI, Mixtral-8x7B-Instruct at a typical hosted API. Neither is in the 2026 catalog.
STRONG_PRICE = "10,30"
WEAK_PRICE = "0.6,0.6"
MMLU_OUTPUT_TOKENS = 1  # the MMLU prompts end in "Answer:"; the answer is one letter

MMLU_GROUPS = {
    "math": "abstract_algebra college_mathematics elementary_mathematics high_school_mathematics "
    "high_school_statistics",
    "stem": "anatomy astronomy college_biology college_chemistry college_computer_science college_physics "
    "computer_security conceptual_physics electrical_engineering high_school_biology high_school_chemistry "
    "high_school_computer_science high_school_physics machine_learning",
    "humanities": "formal_logic high_school_european_history high_school_us_history high_school_world_history "
    "international_law jurisprudence logical_fallacies moral_disputes moral_scenarios philosophy prehistory "
    "professional_law world_religions",
    "social": "econometrics high_school_geography high_school_government_and_politics "
    "high_school_macroeconomics high_school_microeconomics high_school_psychology human_sexuality "
    "professional_psychology public_relations security_studies sociology us_foreign_policy",
    "other": "business_ethics clinical_knowledge college_medicine global_facts human_aging management marketing "
    "medical_genetics miscellaneous nutrition professional_accounting professional_medicine virology",
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def embed(texts: list[str], *, window: TokenWindow | None = DEFAULT_REPRESENTATION.window) -> np.ndarray:
    started = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 30 or done == total:
            last[0] = time.perf_counter()
            log(f"  embedded {done}/{total} ({time.perf_counter() - started:.0f} s)")

    return embed_texts(texts, window=window, progress=progress)


def summary(report: EvalReport) -> dict[str, object]:
    from modelyard.cli_router import report_json

    return report_json(report)


def routing_runs(resamples: int, prices: PairPrices, representation: Representation) -> dict[str, object]:
    from modelyard.routing.smart.learned.plot import write_plots

    mmlu = load_labels(DATA / "mmlu")
    gsm8k = load_labels(DATA / "gsm8k")
    runs: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, labels, kwargs, tokens in (
            ("mmlu_cv5", mmlu, {"cv_folds": 5}, MMLU_OUTPUT_TOKENS),
            ("gsm8k_cv5", gsm8k, {"cv_folds": 5}, MMLU_OUTPUT_TOKENS),
            ("mmlu_to_gsm8k", gsm8k, {"train_labels": mmlu}, MMLU_OUTPUT_TOKENS),
        ):
            log(f"{key}: {len(labels)} prompts")
            started = time.perf_counter()
            report = evaluate(
                labels,
                STRONG,
                WEAK,
                embed=embed,
                config=TrainConfig(representation=representation),
                prices=prices,
                assumed_output_tokens=tokens,
                resamples=resamples,
                seed=0,
                step=lambda m: log("  " + m),
                workdir=Path(tmp),
                **kwargs,  # type: ignore[arg-type]
            )
            if representation == DEFAULT_REPRESENTATION:  # the plots in the docs
                write_plots(report, IMG / f"router-{key.replace('_', '-')}.png", OUT / f"router-{key}.html")
            runs[key] = summary(report) | {"seconds": round(time.perf_counter() - started, 1)}
            log(f"{key}: learned APGR {report.result('learned router').metrics.grid.apgr:.3f}")  # type: ignore[union-attr]
    return runs


def task_classification(
    mmlu: LabelSet, gsm8k: LabelSet, per_task: int, resamples: int, window: TokenWindow | None
) -> dict[str, object]:
    from modelyard.routing.smart.tasks import TaskClassifier

    subject_to_task = {s: task for task, names in MMLU_GROUPS.items() for s in names.split()}
    texts = mmlu.prompts + gsm8k.prompts
    truth = [subject_to_task[g] for g in mmlu.groups] + ["math"] * len(gsm8k)
    # each cached on its own; the window the gateway embeds a route's examples and requests with
    vectors = np.vstack([embed(mmlu.prompts, window=window), embed(gsm8k.prompts, window=window)])
    rng = np.random.default_rng(0)
    tasks = list(MMLU_GROUPS)
    train_rows: list[int] = []
    for task in tasks:
        rows = [i for i, t in enumerate(truth) if t == task]
        train_rows.extend(rng.choice(rows, per_task, replace=False).tolist())
    examples = {t: [texts[i] for i in train_rows if truth[i] == t] for t in tasks}
    ordered_rows = [i for t in tasks for i in train_rows if truth[i] == t]
    classifier = TaskClassifier.build(examples, vectors[ordered_rows], min_confidence=0.0)
    held = sorted(set(range(len(texts))) - set(train_rows))
    predicted = [classifier.classify(vectors[i]).best for i in held]
    actual = [truth[i] for i in held]
    correct = np.array([p == a for p, a in zip(predicted, actual, strict=True)], dtype=float)

    def macro_f1(rows: np.ndarray) -> float:
        scores = []
        for task in tasks:
            tp = sum(predicted[i] == task and actual[i] == task for i in rows)
            fp = sum(predicted[i] == task and actual[i] != task for i in rows)
            fn = sum(predicted[i] != task and actual[i] == task for i in rows)
            scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
        return float(np.mean(scores))

    boot = np.random.default_rng(1)
    n = len(held)
    accs, f1s = [], []
    for _ in range(resamples // 5):  # macro-F1 in pure Python: fewer resamples
        rows = boot.integers(0, n, n)
        accs.append(correct[rows].mean())
        f1s.append(macro_f1(rows))
    confusion = {a: {p: 0 for p in tasks} for a in tasks}
    for p, a in zip(predicted, actual, strict=True):
        confusion[a][p] += 1
    return {
        "examples_per_task": per_task,
        "test_prompts": n,
        "accuracy": float(correct.mean()),
        "accuracy_ci95": [float(np.percentile(accs, 2.5)), float(np.percentile(accs, 97.5))],
        "macro_f1": macro_f1(np.arange(n)),
        "macro_f1_ci95": [float(np.percentile(f1s, 2.5)), float(np.percentile(f1s, 97.5))],
        "bootstrap_resamples": len(accs),
        "confusion": confusion,
        "classifier": "modelyard.routing.smart.tasks.TaskClassifier (k=3 nearest examples per task)",
        "window": None if window is None else [window.head, window.tail],
    }


def _rss_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def decision_cost(router_path: Path, prompts: list[str]) -> dict[str, object]:
    from modelyard.providers.embeddings import _Encoder, find_embedding_files
    from modelyard.routing.smart.learned.runtime import LearnedRouter

    gc.collect()
    before = _rss_mib()
    router = LearnedRouter.load(router_path)
    after_router = _rss_mib()
    encoder = _Encoder(find_embedding_files(), threads=2)
    after_encoder = _rss_mib()
    for prompt in prompts[:20]:  # warm-up
        router.score(prompt, encoder.encode([prompt], router.window)[0][0])
    total, score_only = [], []
    for prompt in prompts:
        t0 = time.perf_counter()
        vector = encoder.encode([prompt], router.window)[0][0]
        t1 = time.perf_counter()
        router.score(prompt, vector)
        t2 = time.perf_counter()
        total.append(t2 - t0)
        score_only.append(t2 - t1)
    ms = lambda values, q: round(1000 * float(np.percentile(values, q)), 3)  # noqa: E731
    return {
        "prompts": len(prompts),
        "embed_and_score_ms": {"p50": ms(total, 50), "p99": ms(total, 99)},
        "score_only_ms": {"p50": ms(score_only, 50), "p99": ms(score_only, 99)},
        "router_file_kib": round(router_path.stat().st_size / 1024, 1),
        "rss_router_mib": round(after_router - before, 1),
        "rss_encoder_mib": round(after_encoder - after_router, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="200 bootstrap resamples instead of 1,000")
    parser.add_argument("--only", choices=["routing", "tasks", "cost"], help="run one part")
    parser.add_argument(
        "--window",
        action="store_true",
        help="the bounded representation (MiniLM over the first 48 and last 14 word pieces + a static "
        "bag of all of them) instead of the default (MiniLM over the first 254 word pieces)",
    )
    parser.add_argument(
        "--out-name", default="routing_eval", help="stem of the JSON written in benchmarks/out"
    )
    args = parser.parse_args()
    if not (DATA / "mmlu").is_dir():
        sys.exit(f"skipped: the shipped routing labels are not at {DATA} (see ../shared/data/README.md)")
    OUT.mkdir(parents=True, exist_ok=True)
    IMG.mkdir(parents=True, exist_ok=True)
    resamples = 200 if args.quick else 1000
    strong_rate = resolve_price(STRONG, STRONG_PRICE, "--strong-price")
    weak_rate = resolve_price(WEAK, WEAK_PRICE, "--weak-price")
    assert strong_rate is not None and weak_rate is not None
    representation = WINDOWED if args.window else DEFAULT_REPRESENTATION
    results_path = OUT / f"{args.out_name}.json"
    results: dict[str, object] = orjson.loads(results_path.read_bytes()) if results_path.exists() else {}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    results["environment"] = {
        "commit": commit.stdout.strip(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "note": "2-core machine shared with other jobs while measuring",
        "representation": representation.describe(),
    }

    def save() -> None:
        results_path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))

    if args.only in (None, "routing"):
        results["routing"] = routing_runs(resamples, PairPrices(strong_rate, weak_rate), representation)
        save()
    mmlu = load_labels(DATA / "mmlu")
    gsm8k = load_labels(DATA / "gsm8k")
    if args.only in (None, "tasks"):
        log("task classification")
        results["tasks"] = {
            str(n): task_classification(mmlu, gsm8k, n, resamples, representation.window) for n in (10, 50)
        }
        save()
    if args.only in (None, "cost"):
        log("decision cost")
        from modelyard.routing.smart.learned.fileformat import write_router_file
        from modelyard.routing.smart.learned.runtime import LearnedRouter
        from modelyard.routing.smart.learned.train import fold_ids, train_router

        vectors = embed(mmlu.prompts, window=representation.window)
        held_out = fold_ids(mmlu.prompts, 5, 0) == 0  # train on 4 folds, check on the fifth
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "router.json"
            train = np.flatnonzero(~held_out)
            config = TrainConfig(representation=representation)
            write_router_file(path, train_router(mmlu.subset(train), vectors[train], STRONG, WEAK, config))
            router = LearnedRouter.load(path)
            test = np.flatnonzero(held_out)
            scores = np.array([router.score(mmlu.prompts[i], vectors[i]) for i in test])
            results["calibration_held_out"] = {
                str(share): float((scores >= router.threshold_for_share(share)).mean())
                for share in (0.1, 0.2, 0.3, 0.5, 0.8)
            }
            sample = [mmlu.prompts[i] for i in np.random.default_rng(0).choice(test, 300, replace=False)]
            results["decision_cost"] = decision_cost(path, sample)
    save()
    log(f"wrote {results_path}")
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
