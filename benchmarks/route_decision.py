"""Smart-routing decision latency (p50/p99, off the event loop), memory, and task-classification
accuracy on prompts whose task is known from their source.

    .venv/bin/python benchmarks/route_decision.py --out benchmarks/out/route_decision

Latency, on the production ``SmartRouting`` object (no HTTP: the decision is what is measured):

1. ``passthrough``: a request naming a model, not a route (what every other request pays);
2. ``embed only``: the MiniLM embedding of one prompt's first 254 word pieces (what
   a decision embeds by default), called directly — the baseline: the part of a decision no
   routing logic can avoid; alternated prompt by prompt with ``embed only, window``: its window
   (first 48 and last 14 word pieces: what a route whose router was trained with ``--input
   window`` embeds);
3. ``decision, uncached``: a new prompt each time — PII rules over the whole body, the embedding,
   the task classifier (7 built-in tasks), the quality-target choice;
4. ``decision, cached``: the same prompts again (the per-prompt LRU skips embedding and classifier);
5. with ``--router FILE`` (a trained router, e.g. ``modelyard router train``): ``decision,
   learned router, uncached`` on a second route that scores each new prompt with it (static bag
   and length features included), alternated prompt by prompt with (3).

Embedding and decision latencies are also given by prompt length (word pieces of the whole
prompt), as p50/p99 per bucket.

While (3) runs, a ticker on the event loop records its largest lateness: the decision runs in
worker threads, so the loop stays free (its lateness is what other requests would wait).

Accuracy (bootstrap 95% intervals over prompts):

* **MMLU subject groups + GSM8K**: five tasks (STEM, humanities, social sciences, other — the MMLU
  paper's grouping of its 57 subjects — and GSM8K word problems), each defined by ``--shots``
  example prompts drawn from the data; tested on held-out prompts of each (contaminated prompts
  dropped). A nearest-examples classifier with a handful of shots, as a user would configure it.
* **GSM8K → math with the built-in tasks**: the share of GSM8K prompts the shipped examples
  classify as ``math`` (no examples from the data at all).

Data: ``../shared/data/routing/`` beside the checkout (``--data``); skipped with a message if absent.
The machine is shared with other jobs: compare the rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from modelyard.accounting.pricebook import PriceBook  # noqa: E402
from modelyard.config.load import load_config  # noqa: E402
from modelyard.providers.embeddings import TokenWindow  # noqa: E402
from modelyard.providers.registry import Registry  # noqa: E402
from modelyard.redact import Redactor  # noqa: E402
from modelyard.routing.router import Router  # noqa: E402
from modelyard.routing.smart.learned.features import DEFAULT_WINDOW  # noqa: E402
from modelyard.routing.smart.service import SmartRouting  # noqa: E402
from modelyard.routing.smart.tasks import BUILTIN_EXAMPLES, TaskClassifier  # noqa: E402
from modelyard.store.sqlite import SqliteStore  # noqa: E402

csv.field_size_limit(10**8)

CONFIG = """\
embedded_models: false
cloud_models_from_env: false
models:
  - {name: local-small, deployments: [{provider: fake, model: echo, tags: [local], hardware: {usd_per_hour: 0}}]}
  - {name: cloud-mini, deployments: [{provider: fake, model: echo, pricing: {input_per_mtok: 0.15, output_per_mtok: 0.6}}]}
  - {name: cloud-big, deployments: [{provider: fake, model: echo, pricing: {input_per_mtok: 3, output_per_mtok: 15}}]}
routes:
  auto:
    candidates: [local-small, cloud-mini, cloud-big]
    tasks:
      classification: {model: local-small}
      extraction: {model: local-small}
      code: {model: cloud-big}
      math: {}
      summarisation: {}
      translation: {}
      chat: {}
    rules:
      - {name: personal-data, when: {pii: [email, phone, card, iban, ssn]}, action: local_only}
    cache_size: 100000
"""

LEARNED_ROUTE = """\
  learned:
    candidates: [cloud-mini, cloud-big]
    router: {{file: "{file}", strong: cloud-big, weak: cloud-mini, strong_share: 0.3}}
    cache_size: 100000
"""

GROUPS = {
    "stem": "abstract_algebra astronomy college_biology college_chemistry college_computer_science "
    "college_mathematics college_physics computer_security conceptual_physics electrical_engineering "
    "elementary_mathematics high_school_biology high_school_chemistry high_school_computer_science "
    "high_school_mathematics high_school_physics high_school_statistics machine_learning",
    "humanities": "formal_logic high_school_european_history high_school_us_history high_school_world_history "
    "international_law jurisprudence logical_fallacies moral_disputes moral_scenarios philosophy prehistory "
    "professional_law world_religions",
    "social_sciences": "econometrics high_school_geography high_school_government_and_politics "
    "high_school_macroeconomics high_school_microeconomics high_school_psychology human_sexuality "
    "professional_psychology public_relations security_studies sociology us_foreign_policy",
    "other": "anatomy business_ethics clinical_knowledge college_medicine global_facts human_aging management "
    "marketing medical_genetics miscellaneous nutrition professional_accounting professional_medicine virology",
}


class Ctx:
    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.headers: dict[str, str] = {}
        self.principal: Any = None
        self.route_name: str | None = None
        self.route_decision: Any = None
        self.route_reason: str | None = None
        self.local_only = False


def rss_mib() -> float:
    """Resident memory now (VmRSS), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def q(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return {"p50_ms": q(0.50), "p90_ms": q(0.90), "p99_ms": q(0.99), "max_ms": ordered[-1], "n": len(values)}


def bootstrap(hits: list[bool], rounds: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    arr = np.asarray(hits, dtype=np.float64)
    means = arr[rng.integers(0, len(arr), size=(rounds, len(arr)))].mean(axis=1)
    return float(arr.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def read_prompts(data: Path) -> tuple[dict[str, list[str]], list[str]]:
    """MMLU prompts per subject group and GSM8K prompts, contaminated ones dropped."""
    contaminated: set[str] = set()
    for name in ("mmlu", "gsm8k"):
        path = data / name / "contaminated_prompts.jsonl"
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    contaminated.add(json.loads(line).get("eval_prompt", ""))
    groups: dict[str, list[str]] = {}
    for group, subjects in GROUPS.items():
        prompts: list[str] = []
        for subject in subjects.split():
            with (data / "mmlu" / f"mmlu_{subject}.csv").open(newline="") as f:
                prompts += [row["prompt"] for row in csv.DictReader(f) if row["prompt"] not in contaminated]
        groups[group] = prompts
    with (data / "gsm8k" / "gsm8k_responses.csv").open(newline="") as f:
        gsm8k = [row["prompt"] for row in csv.DictReader(f) if row["prompt"] not in contaminated]
    return groups, gsm8k


async def encode_all(
    smart: SmartRouting, texts: list[str], window: TokenWindow | None, batch: int = 32
) -> np.ndarray:
    out = []
    for start in range(0, len(texts), batch):
        out.append(np.asarray(await smart._encode(texts[start : start + batch], window)))
    return np.concatenate(out)


BUCKETS = ((0, 64), (65, 128), (129, 256), (257, 10**9))


def by_length(values: list[float], tokens: list[int]) -> dict[str, Any]:
    """p50/p99 of ``values`` per bucket of prompt length (word pieces)."""
    out: dict[str, Any] = {}
    for low, high in BUCKETS:
        chosen = [v for v, n in zip(values, tokens, strict=True) if low <= n <= high]
        if chosen:
            q = quantiles(chosen)
            out[f"{low}-{high if high < 10**9 else ''}"] = {
                "p50_ms": q["p50_ms"],
                "p99_ms": q["p99_ms"],
                "n": q["n"],
            }
    return out


async def concurrently(fn: Any, items: list[Any], clients: int) -> dict[str, Any]:
    """Run ``fn(item)`` for every item from ``clients`` concurrent workers: latency and rate."""
    queue = list(items)
    timings: list[float] = []

    async def worker() -> None:
        while queue:
            item = queue.pop()
            start = time.perf_counter()
            await fn(item)
            timings.append((time.perf_counter() - start) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - start
    return {**quantiles(timings), "per_s": round(len(items) / wall, 2)}


async def latency_concurrent(smart: SmartRouting, prompts: list[str], clients: int) -> dict[str, Any]:
    """New prompts from ``clients`` concurrent callers: the embedding alone against whole decisions."""
    route = smart.routes["auto"]
    half = len(prompts) // 2
    embed = await concurrently(lambda p: smart._encode([p], None), prompts[:half], clients)
    counter = iter(range(10**9))
    decide = await concurrently(
        lambda p: smart.decide(
            route, {"model": "auto", "messages": [{"role": "user", "content": p}]}, Ctx(f"k{next(counter)}")
        ),
        prompts[half:],
        clients,
    )
    return {f"embed_only_c{clients}": embed, f"decision_uncached_c{clients}": decide}


async def latency(smart: SmartRouting, prompts: list[str], tokens: list[int]) -> dict[str, Any]:
    route = smart.routes["auto"]
    bodies = [{"model": "auto", "messages": [{"role": "user", "content": p}]} for p in prompts]
    results: dict[str, Any] = {}
    lengths: dict[str, Any] = {}

    timings = []
    for i, body in enumerate(bodies):
        start = time.perf_counter()
        await smart.resolve(None, {**body, "model": "local-small"}, Ctx(f"p{i}"))  # type: ignore[arg-type]
        timings.append((time.perf_counter() - start) * 1000)
    results["passthrough"] = quantiles(timings)

    windowed: list[float] = []
    full: list[float] = []
    for i, prompt in enumerate(prompts):  # A/B alternated, prompt by prompt
        for window in (DEFAULT_WINDOW, None) if i % 2 else (None, DEFAULT_WINDOW):
            start = time.perf_counter()
            await smart._encode([prompt], window)
            (full if window is None else windowed).append((time.perf_counter() - start) * 1000)
    results["embed_only"] = quantiles(full)  # what a decision of the tasks-only route embeds
    results["embed_only_window"] = quantiles(windowed)
    lengths["embed_only"] = by_length(full, tokens)
    lengths["embed_only_window"] = by_length(windowed, tokens)

    async def ticker(lateness: list[float], done: asyncio.Event) -> None:
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            lateness.append((time.perf_counter() - start - 0.001) * 1000)

    idle: list[float] = []
    idle_done = asyncio.Event()
    idle_tick = asyncio.create_task(ticker(idle, idle_done))
    await asyncio.sleep(min(5.0, sum(results["embed_only"]["p50_ms"] for _ in prompts) / 1000))
    idle_done.set()
    await idle_tick
    results["loop_lateness_idle"] = quantiles(idle)
    lateness: list[float] = []
    done = asyncio.Event()
    tick = asyncio.create_task(ticker(lateness, done))
    smart.cache["auto"].__init__(100000)  # type: ignore[misc]  # start cold
    timings = []
    learned_timings: list[float] = []
    learned = smart.routes.get("learned")
    for i, body in enumerate(bodies):  # with --router: A/B alternated with the learned route
        calls = [(route, body, timings)]
        if learned is not None:
            pair = (learned, {**body, "model": "learned"}, learned_timings)
            calls = [pair, *calls] if i % 2 else [*calls, pair]
        for target, request, series in calls:
            start = time.perf_counter()
            await smart.decide(target, request, Ctx(f"u{i}{target.name}"))
            series.append((time.perf_counter() - start) * 1000)
    done.set()
    await tick
    results["decision_uncached"] = quantiles(timings)
    results["loop_lateness_during_uncached"] = quantiles(lateness)
    lengths["decision_uncached"] = by_length(timings, tokens)

    timings = []
    for i, body in enumerate(bodies):
        start = time.perf_counter()
        await smart.decide(route, body, Ctx(f"c{i}"))
        timings.append((time.perf_counter() - start) * 1000)
    results["decision_cached"] = quantiles(timings)
    if learned_timings:
        results["decision_learned_uncached"] = quantiles(learned_timings)
        lengths["decision_learned_uncached"] = by_length(learned_timings, tokens)
    results["by_prompt_length"] = lengths
    return results


async def accuracy(
    smart: SmartRouting, data: Path, shots: int, per_group: int, seed: int, window: TokenWindow | None
) -> dict[str, Any]:
    groups, gsm8k = read_prompts(data)
    rng = random.Random(seed)
    tasks = {**groups, "gsm8k_math": gsm8k}
    train: dict[str, list[str]] = {}
    test: list[tuple[str, str]] = []
    for task, prompts in tasks.items():
        chosen = rng.sample(prompts, shots + per_group)
        train[task] = chosen[:shots]
        test += [(task, p) for p in chosen[shots:]]
    vectors = await encode_all(smart, [p for ps in train.values() for p in ps], window)
    classifier = TaskClassifier.build(train, vectors, min_confidence=0.0)
    test_vectors = await encode_all(smart, [p for _, p in test], window)
    hits = [classifier.classify(v).best == task for (task, _), v in zip(test, test_vectors, strict=True)]
    per_task = {
        task: bootstrap([h for (t, _), h in zip(test, hits, strict=True) if t == task]) for task in tasks
    }
    builtin_vectors = await encode_all(smart, [t for ex in BUILTIN_EXAMPLES.values() for t in ex], window)
    builtin = TaskClassifier.build(BUILTIN_EXAMPLES, builtin_vectors)
    sample = rng.sample(gsm8k, min(len(gsm8k), per_group * 2))
    sample_vectors = await encode_all(smart, sample, window)
    guesses = [builtin.classify(v) for v in sample_vectors]
    return {
        "window": None if window is None else [window.head, window.tail],
        "shots_per_task": shots,
        "test_per_task": per_group,
        "overall": bootstrap(hits),
        "per_task": per_task,
        "chance": 1 / len(tasks),
        "gsm8k_builtin_math_best": bootstrap([g.best == "math" for g in guesses]),
        "gsm8k_builtin_math_sure": bootstrap([g.task == "math" for g in guesses]),
        "gsm8k_sample": len(sample),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.out)
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    config_path = work / "route_decision.yaml"
    await asyncio.to_thread(config_path.write_text, CONFIG)  # (the learned route is added below)
    text = CONFIG
    if args.router:
        text += LEARNED_ROUTE.format(file=args.router)  # made absolute before the loop starts
    config = load_config(text, source=str(config_path), environ={})
    registry = Registry(config, None, Redactor([]))  # type: ignore[arg-type]  # fake providers only
    router = Router(config, registry)
    prices = PriceBook(config)
    for group in router.groups():
        for dep in group.deployments:
            if dep.policy.local:
                prices.register_local(dep.label, dep.policy.hardware)
    store = SqliteStore(str(work / "route_decision.db"))
    await store.open()
    rss_before = rss_mib()
    smart = SmartRouting(config, registry, router, prices, store, rng=random.Random(0))
    await smart.start()
    await smart.ready()
    rss_ready = rss_mib()
    data = Path(args.data)
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_start": os.getloadavg(),
        "rss_mib_before_routes": round(rss_before, 1),
        "rss_mib_routes_ready": round(rss_ready, 1),
    }
    present = await asyncio.to_thread(data.exists)
    if present:
        groups, gsm8k = read_prompts(data)
        pool = [p for ps in groups.values() for p in ps] + gsm8k
        prompts = random.Random(args.seed).sample(pool, args.decisions)
        report["prompt_source"] = "MMLU + GSM8K prompts"
    else:
        print(
            f"{data} not found: latency on synthetic prompts, no accuracy (see the docstring)",
            file=sys.stderr,
        )
        prompts = [
            f"Please extract the fields from record {i} and summarise it" for i in range(args.decisions)
        ]
        report["prompt_source"] = "synthetic"
    encoder = registry.shared_embeddings()._encoder  # started by smart.ready()
    tokens = [len(e.ids) for e in encoder.untruncated.encode_batch(prompts)]
    report["latency"] = await latency(smart, prompts, tokens)
    others = [p for p in (pool if present else []) if p not in set(prompts)]
    fresh = (
        random.Random(args.seed + 1).sample(others, min(len(others), args.decisions)) if others else prompts
    )
    report["concurrent"] = await latency_concurrent(smart, fresh, args.clients)
    if present and not args.no_accuracy:
        window = DEFAULT_WINDOW if args.window else None
        report["accuracy"] = await accuracy(smart, data, args.shots, args.per_task, args.seed, window)
    report["rss_mib_end"] = round(rss_mib(), 1)
    report["load_avg_end"] = os.getloadavg()
    await smart.aclose()
    await registry.shared_embeddings().aclose()
    await store.aclose()
    await asyncio.to_thread((work / "route_decision.json").write_text, json.dumps(report, indent=2))
    return report


def render(report: dict[str, Any]) -> str:
    lat = report["latency"]
    base = lat["embed_only"]["p50_ms"]
    lines = [
        "| step | p50 ms | p90 ms | p99 ms | max ms | p50 / embed-only p50 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in (
        "passthrough",
        "embed_only",
        "embed_only_window",
        "decision_uncached",
        "decision_learned_uncached",
        "decision_cached",
        "loop_lateness_idle",
        "loop_lateness_during_uncached",
    ):
        row = lat.get(name)
        if row is None:
            continue
        lines.append(
            f"| {name} | {row['p50_ms']:.3f} | {row['p90_ms']:.3f} | {row['p99_ms']:.3f} | {row['max_ms']:.2f} "
            f"| {row['p50_ms'] / base:.2f} |"
        )
    if "by_prompt_length" in lat:
        series = lat["by_prompt_length"]
        buckets = list(next(iter(series.values())))
        lines += [
            "",
            "| p50 / p99 ms by prompt length (word pieces) | " + " | ".join(buckets) + " |",
            "|---|" + "---:|" * len(buckets),
        ]
        for name, row in series.items():
            cells = [
                f"{row[b]['p50_ms']:.1f} / {row[b]['p99_ms']:.1f} (n={row[b]['n']})" if b in row else "–"
                for b in buckets
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if "concurrent" in report:
        conc = report["concurrent"]
        lines += [
            "",
            "| concurrent series (new prompts) | p50 ms | p99 ms | per second |",
            "|---|---:|---:|---:|",
        ]
        for name, row in conc.items():
            if isinstance(row, dict):
                lines.append(f"| {name} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | {row['per_s']:.1f} |")
    if "accuracy" in report:
        acc = report["accuracy"]
        lines += ["", "| task | accuracy | 95% CI |", "|---|---:|---|"]
        for task, (mean, low, high) in acc["per_task"].items():
            lines.append(f"| {task} | {mean:.3f} | {low:.3f}–{high:.3f} |")
        mean, low, high = acc["overall"]
        lines.append(
            f"| **all ({acc['shots_per_task']} shots/task; chance {acc['chance']:.2f})** | **{mean:.3f}** | {low:.3f}–{high:.3f} |"
        )
        for key, label in (("gsm8k_builtin_math_best", "GSM8K → built-in `math` (best guess)"),
                           ("gsm8k_builtin_math_sure", "GSM8K → built-in `math` (sure)")):  # fmt: skip
            mean, low, high = acc[key]
            lines.append(f"| {label} | {mean:.3f} | {low:.3f}–{high:.3f} |")
    lines.append("")
    lines.append(
        f"RSS: {report['rss_mib_before_routes']} MiB before SmartRouting, {report['rss_mib_routes_ready']} MiB "
        f"with MiniLM and the classifier loaded, {report['rss_mib_end']} MiB at the end (VmRSS)."
    )
    lines.append(f"Load average at start / end: {report['load_avg_start']} / {report['load_avg_end']}.")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/out/route_decision")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "routing"))
    parser.add_argument("--decisions", type=int, default=400, help="prompts per latency series")
    parser.add_argument("--clients", type=int, default=8, help="concurrent callers of the concurrent series")
    parser.add_argument("--shots", type=int, default=8, help="example prompts per task")
    parser.add_argument("--per-task", type=int, default=200, help="held-out prompts per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-accuracy", action="store_true", help="latency and memory only")
    parser.add_argument(
        "--window",
        action="store_true",
        help="task accuracy on the token window (first 48 + last 14 word pieces) instead of the first 254",
    )
    parser.add_argument("--router", help="a trained router file: also time decisions of a route using it")
    parser.add_argument("--render", help="only print the tables of an earlier run's route_decision.json")
    args = parser.parse_args()
    if args.router:
        args.router = str(Path(args.router).resolve())
    result = json.loads(Path(args.render).read_text()) if args.render else asyncio.run(main(args))
    print(render(result))
