"""``modelyard router train`` / ``router eval``: learned strong-vs-weak routers from quality labels.

Labels: a RouteLLM data folder (``mmlu/``, ``gsm8k/``), a CSV (``prompt`` + one score column per
model) or JSONL (``{"prompt": ..., "scores": {"<model>": 0..1}}``); see
:mod:`modelyard.routing.smart.learned.data`. Or the gateway's own ``POST /v1/feedback`` scores
joined with the captured prompts (``--from-feedback``, ``router export-feedback``; see
:mod:`modelyard.routing.smart.learned.feedback_labels`). docs/router-training.md is the guide.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from modelyard.providers.embeddings import TokenWindow
    from modelyard.routing.smart.learned.data import LabelSet
    from modelyard.routing.smart.learned.evaluate import Embedder, EvalReport
    from modelyard.routing.smart.learned.features import Representation
    from modelyard.routing.smart.learned.feedback_labels import FeedbackLabels
    from modelyard.routing.smart.learned.metrics import CurveMetrics
    from modelyard.routing.smart.learned.train import TrainConfig

router_app = typer.Typer(
    help="Train and evaluate learned strong-vs-weak routers (RouteLLM-style APGR / CPT, with CIs).",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

DataOption = Annotated[
    Path,
    typer.Option(
        "--data",
        help="Labels: a RouteLLM folder (e.g. ../shared/data/routing/mmlu), a .csv or a .jsonl file.",
        show_default=False,
    ),
]
StrongOption = Annotated[
    str | None,
    typer.Option(
        help="The strong (expensive) model's column [default: the better-scoring of two].", show_default=False
    ),
]
WeakOption = Annotated[
    str | None,
    typer.Option(
        help="The weak (cheap) model's column [default: the worse-scoring of two].", show_default=False
    ),
]


class PromptInput(StrEnum):
    """What a router reads of a prompt (``--input``)."""

    window = "window"
    full = "full"


InputOption = Annotated[
    PromptInput,
    typer.Option(
        "--input",
        help="What the router reads of a prompt: `full` = MiniLM over its first 254 word pieces "
        "(the cost grows with the prompt: ~50 ms p99 at 256); `window` = MiniLM over its first 48 "
        "and last 14 word pieces (one run of <= 64 tokens) + an IDF-weighted static bag and a "
        "word-piece TF-IDF head over all of them: bounded cost (MMLU APGR 0.685 vs 0.681; "
        "trained on MMLU, tested on GSM8K 0.603 vs 0.606).",
    ),
]
CacheOption = Annotated[
    Path | None,
    typer.Option(
        help="Embedding cache folder [default: $MODELYARD_CACHE_DIR, else ~/.cache/modelyard].",
        show_default=False,
    ),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="The gateway's database (sqlite:///PATH or postgresql://…) "
        "\\[default: --config's storage.database].",
        show_default=False,
    ),
]
GatewayConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="The gateway's YAML config, for its database \\[default: $MODELYARD_CONFIG, else zero config].",
        show_default=False,
    ),
]
SinceOption = Annotated[
    str | None,
    typer.Option(help="Only feedback since: 24h, 7d, 2w or a date (2026-11-01).", show_default=False),
]
RouteOption = Annotated[
    str | None,
    typer.Option(help="Only feedback on requests this route decided (e.g. auto).", show_default=False),
]
KeepContaminated = Annotated[
    bool,
    typer.Option(
        "--keep-contaminated",
        help="Keep the prompts listed in contaminated_prompts.jsonl beside the data (dropped by default).",
    ),
]


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


@contextlib.contextmanager
def _clear_errors() -> Iterator[None]:
    """Turn the expected failures (bad labels, router file, price, missing model) into one red line."""
    from modelyard.routing.smart.learned.cost import PriceError
    from modelyard.routing.smart.learned.data import LabelError
    from modelyard.routing.smart.learned.features import EmbeddingError
    from modelyard.routing.smart.learned.fileformat import RouterFileError

    try:
        yield
    except (LabelError, RouterFileError, PriceError, EmbeddingError) as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"{exc.filename or ''}: {exc.strerror or exc}") from None


def _read_feedback(
    console: Console, database_url: str | None, config: Path | None, since: str | None, route: str | None
) -> FeedbackLabels:
    """Feedback joined with captured prompts, from the given database or the config's."""
    from modelyard.routing.smart.learned.feedback_labels import parse_since, read_feedback_labels

    if database_url is None:
        from modelyard.config import load_config_file
        from modelyard.errors import ConfigError

        try:
            database_url = load_config_file(config).database_url
        except ConfigError as exc:
            raise _fail(str(exc)) from None
    start = 0.0 if since is None else parse_since(since)
    found = read_feedback_labels(database_url, since=start, route=route)
    console.print(found.summary(), highlight=False, soft_wrap=True)
    return found


def _training_labels(
    console: Console,
    data: Path | None,
    keep_contaminated: bool,
    from_feedback: bool,
    feedback: tuple[str | None, Path | None, str | None, str | None],
    pair: tuple[str | None, str | None],
) -> LabelSet:
    """--data's labels, or --from-feedback's (which must name the pair: feedback cannot tell)."""
    from modelyard.routing.smart.learned.data import load_labels

    if from_feedback == (data is not None):
        raise _fail("give either --data LABELS or --from-feedback (with --strong and --weak)")
    if data is not None:
        return load_labels(data, drop_contaminated=not keep_contaminated)
    if None in pair:
        raise _fail(
            "--from-feedback needs --strong MODEL --weak MODEL: the served model names the router "
            "chooses between (e.g. the route's costliest and cheapest candidates)"
        )
    return _read_feedback(console, *feedback).label_set()


DEFAULT_INPUT = PromptInput.window
"""The default of ``--input``: the bounded window, the one reading that meets both the quality targets
and the 15 ms p99 decision budget (benchmarks/RESULTS.md, "Bounded routing input"). The library's
own default (:data:`.learned.features.DEFAULT_REPRESENTATION`) stays the full prompt, which older
callers and router files assume."""


def _representation(prompt_input: PromptInput) -> Representation:
    from modelyard.routing.smart.learned.features import FULL_PROMPT, WINDOWED

    return FULL_PROMPT if prompt_input is PromptInput.full else WINDOWED


def _train_config(
    linear_c: float, clusters: int, knn: int, length_prior: float, seed: int, prompt_input: PromptInput
) -> TrainConfig:
    """The training settings the ``router`` commands share, from their options."""
    from modelyard.routing.smart.learned.train import TrainConfig

    return TrainConfig(
        linear_c=linear_c,
        clusters=clusters,
        knn_k=knn,
        length_prior=length_prior,
        seed=seed,
        representation=_representation(prompt_input),
    )


def _embedder(console: Console, cache_dir: Path | None) -> Embedder:
    from modelyard.routing.smart.learned.features import embed_texts

    def embed(texts: list[str], *, window: TokenWindow | None = None) -> npt.NDArray[np.float32]:
        with Progress(
            TextColumn("embedding prompts (all-MiniLM-L6-v2)"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("embed", total=len(texts))
            return embed_texts(
                texts,
                window=window,
                cache_dir=cache_dir,
                progress=lambda done, _n: bar.update(task, completed=done),
            )

    return embed


@router_app.command()
def train(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Labels: a RouteLLM folder (e.g. ../shared/data/routing/mmlu), a .csv or a .jsonl file.",
            show_default=False,
        ),
    ] = None,
    from_feedback: Annotated[
        bool,
        typer.Option(
            "--from-feedback",
            help="Train on the gateway's POST /v1/feedback scores and captured prompts instead of --data.",
        ),
    ] = False,
    database_url: DatabaseOption = None,
    gateway_config: GatewayConfigOption = None,
    since: SinceOption = None,
    route: RouteOption = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Router file to write.")] = Path("router.json"),
    strong: StrongOption = None,
    weak: WeakOption = None,
    clusters: Annotated[
        int, typer.Option(min=0, help="k-means clusters of the cluster-prior component (0: off).")
    ] = 100,
    linear_c: Annotated[
        float, typer.Option(min=1e-6, help="Inverse L2 strength of the logistic heads.")
    ] = 0.3,
    knn: Annotated[
        int,
        typer.Option(
            min=0, help="Neighbours of a kNN component (0: off; on stores every training embedding)."
        ),
    ] = 0,
    length_prior: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Weight of the prompt-length prior (longer → strong), in standard deviations of the "
            "learned gain; keeps the router sensible on prompts unlike its training data (0: off).",
        ),
    ] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed for k-means and the inner folds.")] = 0,
    prompt_input: InputOption = DEFAULT_INPUT,
    cache_dir: CacheOption = None,
    keep_contaminated: KeepContaminated = False,
) -> None:
    """Train a router on per-prompt quality labels and write it (deterministic JSON).

    Example: [bold]modelyard router train --data ../shared/data/routing/mmlu --out router.json[/bold]
    From feedback: [bold]modelyard router train --from-feedback --strong gpt-4o --weak local[/bold]
    """
    from modelyard.routing.smart.learned.data import for_pair, pick_pair
    from modelyard.routing.smart.learned.fileformat import write_router_file
    from modelyard.routing.smart.learned.train import train_router

    console = Console(stderr=True)
    with _clear_errors():
        labels = _training_labels(
            console,
            data,
            keep_contaminated,
            from_feedback,
            (database_url, gateway_config, since, route),
            (strong, weak),
        )
        strong_model, weak_model = pick_pair(labels, strong, weak)
        labels = for_pair(labels, strong_model, weak_model)
        console.print(
            f"{len(labels)} prompts from {labels.source} "
            f"({labels.dropped_contaminated} contaminated dropped); "
            f"strong {strong_model} ({labels.mean_score(strong_model):.3f}), "
            f"weak {weak_model} ({labels.mean_score(weak_model):.3f})"
            + (_partial_note(labels, strong_model, weak_model) if labels.partial else ""),
            highlight=False,
        )
        config = _train_config(linear_c, clusters, knn, length_prior, seed, prompt_input)
        embeddings = _embedder(console, cache_dir)(labels.prompts, window=config.representation.window)
        with console.status("training") as status:
            document = train_router(
                labels,
                embeddings,
                strong_model,
                weak_model,
                config,
                step=lambda m: status.update(f"training: {m}"),
            )
        write_router_file(out, document)
    weights = document["training"]["blend_weights"]
    console.print(
        f"[green]wrote {out}[/green] (blend: "
        + ", ".join(f"{k} {v:.2f}" for k, v in weights.items())
        + "). Evaluate with: "
        + (
            "modelyard router export-feedback -o fb.jsonl, then router eval --data fb.jsonl --cv 5"
            if from_feedback
            else "modelyard router eval --data DATA --cv 5"
        ),
        highlight=False,
    )


def _partial_note(labels: LabelSet, strong: str, weak: str) -> str:
    from modelyard.routing.smart.learned.partial import label_counts

    n = label_counts(labels.scores[strong], labels.scores[weak])
    return (
        f"; partial labels: strong scored on {n['strong']}, weak on {n['weak']}, both on {n['both']} "
        "(each head learns from its own model's scores)"
    )


@router_app.command("export-feedback")
def export_feedback(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL label file to write.")] = Path(
        "feedback-labels.jsonl"
    ),
    database_url: DatabaseOption = None,
    config: GatewayConfigOption = None,
    since: SinceOption = None,
    route: RouteOption = None,
) -> None:
    """Write the gateway's feedback, joined with the captured prompts, as JSONL labels.

    One line per prompt: {"prompt", "scores": {model: mean score}, "feedback": {model: count},
    "group": task}; the --data format of `router train` / `router eval`, to inspect or merge
    with eval labels. Example: [bold]modelyard router export-feedback --route auto -o labels.jsonl[/bold]
    """
    console = Console(stderr=True)
    with _clear_errors():
        found = _read_feedback(console, database_url, config, since, route)
        data = found.jsonl()
        partial = out.with_name(out.name + ".partial")
        partial.write_bytes(data)
        partial.replace(out)
    console.print(
        f"[green]wrote {out}[/green] ({len(found.prompts)} prompts; models: {', '.join(found.models())}). "
        f"Train with: modelyard router train --data {out} --strong MODEL --weak MODEL",
        highlight=False,
    )


@router_app.command("eval")
def evaluate_command(
    data: DataOption,
    router: Annotated[
        Path | None, typer.Option(help="Evaluate this trained router file on --data.", show_default=False)
    ] = None,
    cv: Annotated[
        int | None,
        typer.Option(
            min=2,
            help="K-fold cross-fitting: train on K-1 folds, score the rest [default: 5].",
            show_default=False,
        ),
    ] = None,
    train_data: Annotated[
        Path | None,
        typer.Option(help="Out of domain: train on these labels, evaluate on --data.", show_default=False),
    ] = None,
    strong: StrongOption = None,
    weak: WeakOption = None,
    out_dir: Annotated[Path, typer.Option(help="Folder for the plot (PNG, HTML) and metrics JSON.")] = Path(
        "."
    ),
    name: Annotated[str, typer.Option(help="File name stem of the outputs.")] = "router-eval",
    strong_price: Annotated[
        str | None,
        typer.Option(
            help="Strong model price INPUT,OUTPUT in $ per Mtok [default: the price catalog].",
            show_default=False,
        ),
    ] = None,
    weak_price: Annotated[
        str | None,
        typer.Option(
            help="Weak model price INPUT,OUTPUT in $ per Mtok [default: the price catalog].",
            show_default=False,
        ),
    ] = None,
    output_tokens: Annotated[
        int, typer.Option(min=0, help="Output tokens per answer where the data has no responses.")
    ] = 1,
    resamples: Annotated[int, typer.Option(min=10, help="Bootstrap resamples for the 95% CIs.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of folds, random baseline and bootstrap.")] = 0,
    clusters: Annotated[
        int, typer.Option(min=0, help="As in `router train` (for --cv / --train-data).")
    ] = 100,
    linear_c: Annotated[float, typer.Option(min=1e-6, help="As in `router train`.")] = 0.3,
    knn: Annotated[int, typer.Option(min=0, help="As in `router train`.")] = 0,
    length_prior: Annotated[float, typer.Option(min=0.0, help="As in `router train`.")] = 0.5,
    prompt_input: Annotated[
        PromptInput,
        typer.Option(
            "--input",
            help="As in `router train` (for --cv / --train-data; a router file records its own).",
        ),
    ] = DEFAULT_INPUT,
    cache_dir: CacheOption = None,
    keep_contaminated: KeepContaminated = False,
) -> None:
    """Evaluate a router beside the baselines: table, PNG and HTML plot, metrics JSON.

    Give one of --router FILE, --cv K (the default, K = 5) or --train-data OTHER.
    """
    from modelyard.routing.smart.learned.cost import PairPrices, resolve_price
    from modelyard.routing.smart.learned.data import LabelError, for_pair, load_labels, pick_pair
    from modelyard.routing.smart.learned.evaluate import evaluate
    from modelyard.routing.smart.learned.plot import write_plots

    if sum(x is not None for x in (router, cv, train_data)) > 1:
        raise _fail("give only one of --router, --cv and --train-data")
    console = Console(stderr=True)
    with _clear_errors():
        labels = load_labels(data, drop_contaminated=not keep_contaminated)
        strong_model, weak_model = pick_pair(labels, strong, weak)
        train_labels = None
        if train_data is not None:
            train_labels = load_labels(train_data, drop_contaminated=not keep_contaminated)
            for model in (strong_model, weak_model):
                if model not in train_labels.scores:
                    raise LabelError(
                        f"{train_labels.source} has no labels for {model!r}; both data sets need the pair"
                    )
        if router is not None:
            from modelyard.routing.smart.learned.runtime import LearnedRouter

            loaded = LearnedRouter.load(router)
            if strong is None and weak is None:
                strong_model, weak_model = pick_pair(labels, loaded.strong, loaded.weak)
        if labels.partial and for_pair(labels, strong_model, weak_model).partial:
            if train_data is not None:
                raise _fail("--train-data is not supported with partial labels; use --cv K or --router FILE")
            config = _train_config(linear_c, clusters, knn, length_prior, seed, prompt_input)
            partial_eval = (router, cv, config, resamples, seed, out_dir / f"{name}.json")
            _evaluate_partial(console, labels, strong_model, weak_model, cache_dir, partial_eval)
            return
        strong_rate = resolve_price(strong_model, strong_price, "--strong-price")
        weak_rate = resolve_price(weak_model, weak_price, "--weak-price")
        prices = PairPrices(strong_rate, weak_rate) if strong_rate and weak_rate else None
        if prices is None:
            missing = [m for m, r in ((strong_model, strong_rate), (weak_model, weak_rate)) if r is None]
            console.print(
                f"[yellow]no price for {', '.join(missing)} in the catalog: the cost panel is left out "
                "(give --strong-price/--weak-price INPUT,OUTPUT in $ per Mtok)[/yellow]",
                highlight=False,
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        config = _train_config(linear_c, clusters, knn, length_prior, seed, prompt_input)
        with tempfile.TemporaryDirectory(prefix="modelyard-router-") as workdir:
            embed = _embedder(console, cache_dir)
            with console.status("evaluating") as status:
                report = evaluate(
                    labels,
                    strong_model,
                    weak_model,
                    embed=embed,
                    router_path=router,
                    cv_folds=cv,
                    train_labels=train_labels,
                    config=config,
                    prices=prices,
                    assumed_output_tokens=output_tokens,
                    resamples=resamples,
                    seed=seed,
                    step=lambda m: status.update(m),
                    workdir=Path(workdir),
                )
        png, page, metrics = (out_dir / f"{name}.{ext}" for ext in ("png", "html", "json"))
        write_plots(report, png, page)
        metrics.write_bytes(
            orjson.dumps(report_json(report), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        )
    _print_table(report)
    console.print(f"wrote {png}, {page} and {metrics}", highlight=False)


def _evaluate_partial(
    console: Console,
    labels: LabelSet,
    strong: str,
    weak: str,
    cache_dir: Path | None,
    how: tuple[Path | None, int | None, TrainConfig, int, int, Path],
) -> None:
    """`router eval` on labels that score one model per prompt: the measurable part, said so."""
    from modelyard.routing.smart.learned.data import for_pair
    from modelyard.routing.smart.learned.partial_eval import SHARES, evaluate_partial

    router, cv, config, resamples, seed, metrics = how
    labels = for_pair(labels, strong, weak)
    with (
        tempfile.TemporaryDirectory(prefix="modelyard-router-") as workdir,
        console.status("evaluating") as status,
    ):
        report = evaluate_partial(
            labels, strong, weak, embed=_embedder(console, cache_dir), router_path=router, cv_folds=cv,
            config=config, resamples=resamples, seed=seed, workdir=Path(workdir), step=status.update,
        )  # fmt: skip
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_bytes(orjson.dumps(report.json(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    table = Table(title=f"{report.title}\n{report.mode}", title_justify="left")
    table.add_column("router")
    for share in SHARES:
        table.add_column(f"est. quality at {share:.0%} strong [95% CI]")
    for row in report.rows:
        table.add_row(
            row.name,
            *(f"{q:.3f} [{low:.3f}, {high:.3f}]" for q, (low, high) in zip(row.quality, row.ci, strict=True)),
            style="bold red" if row.name == "learned router" else None,
        )
    out = Console()
    if not out.is_terminal:
        out = Console(width=170)
    out.print(table)
    n = report.counts
    out.print(
        f"{report.prompts} prompts: strong scored on {n['strong']} (mean {report.strong_mean:.4f}), weak on "
        f"{n['weak']} (mean {report.weak_mean:.4f}), both on {n['both']}; est. quality: inverse "
        "propensity weighted, bootstrap CIs over prompts",
        highlight=False,
    )
    for model, b in report.brier.items():
        out.print(
            f"cross-fitted P({model} good) on its {b['n']:.0f} observed scores: Brier {b['heads']:.4f} "
            f"(constant training mean: {b['constant']:.4f}; lower is better), accuracy {b['accuracy']:.3f}",
            highlight=False,
        )
    for note in report.notes:
        out.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    console.print(f"wrote {metrics}", highlight=False)


def _print_table(report: EvalReport) -> None:
    from modelyard.routing.smart.learned.plot import HEADERS, metrics_rows

    table = Table(title=f"{report.title}\n{report.mode}", title_justify="left")
    for header in HEADERS:
        table.add_column(header, overflow="fold")
    for row in metrics_rows(report):
        table.add_row(*row, style="bold red" if row[0] == "learned router" else None)
    console = Console()
    if not console.is_terminal:
        console = Console(width=170)  # a file or pipe: do not fold the table to 80 columns
    console.print(table)
    console.print(
        f"{report.prompts} prompts ({report.dropped_contaminated} contaminated dropped); strong "
        f"{report.strong_quality:.4f}, weak {report.weak_quality:.4f}; CIs: bootstrap over prompts",
        highlight=False,
    )
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)


def report_json(report: EvalReport) -> dict[str, object]:
    """The numbers of a report, for scripts and RESULTS.md."""

    def metric_block(m: CurveMetrics) -> dict[str, object]:
        return {"apgr": m.apgr, "cpt20": m.cpt[0], "cpt50": m.cpt[1], "cpt80": m.cpt[2]}

    routers: dict[str, object] = {}
    for result in report.results:
        if result.metrics is None:
            routers[result.name] = {"fixed_share": result.fixed_share}
            continue
        m = result.metrics
        routers[result.name] = {
            "grid": metric_block(m.grid),
            "grid_ci95": [metric_block(m.grid_low), metric_block(m.grid_high)],
            "routellm": metric_block(m.routellm),
            "routellm_ci95": [metric_block(m.routellm_low), metric_block(m.routellm_high)],
            "resamples": m.resamples,
        }
    return {
        "title": report.title,
        "mode": report.mode,
        "prompts": report.prompts,
        "dropped_contaminated": report.dropped_contaminated,
        "strong": report.strong,
        "weak": report.weak,
        "strong_quality": report.strong_quality,
        "weak_quality": report.weak_quality,
        "cost_note": report.cost_note,
        "notes": report.notes,
        "routers": routers,
    }
