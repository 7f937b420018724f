"""``modelyard router train`` / ``router eval``: learned strong-vs-weak routers from quality labels.

Labels: a RouteLLM data folder (``mmlu/``, ``gsm8k/``), a CSV (``prompt`` + one score column per
model) or JSONL (``{"prompt": ..., "scores": {"<model>": 0..1}}``); see
:mod:`modelyard.routing.smart.learned.data`. docs/router-training.md is the guide.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
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

    from modelyard.routing.smart.learned.evaluate import EvalReport
    from modelyard.routing.smart.learned.metrics import CurveMetrics

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
CacheOption = Annotated[
    Path | None,
    typer.Option(
        help="Embedding cache folder [default: $MODELYARD_CACHE_DIR, else ~/.cache/modelyard].",
        show_default=False,
    ),
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


def _embedder(console: Console, cache_dir: Path | None) -> Callable[[list[str]], npt.NDArray[np.float32]]:
    from modelyard.routing.smart.learned.features import embed_texts

    def embed(texts: list[str]) -> npt.NDArray[np.float32]:
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
                texts, cache_dir=cache_dir, progress=lambda done, _n: bar.update(task, completed=done)
            )

    return embed


@router_app.command()
def train(
    data: DataOption,
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
    cache_dir: CacheOption = None,
    keep_contaminated: KeepContaminated = False,
) -> None:
    """Train a router on per-prompt quality labels and write it (deterministic JSON).

    Example: [bold]modelyard router train --data ../shared/data/routing/mmlu --out router.json[/bold]
    """
    from modelyard.routing.smart.learned.data import load_labels, pick_pair
    from modelyard.routing.smart.learned.fileformat import write_router_file
    from modelyard.routing.smart.learned.train import TrainConfig, train_router

    console = Console(stderr=True)
    with _clear_errors():
        labels = load_labels(data, drop_contaminated=not keep_contaminated)
        strong_model, weak_model = pick_pair(labels, strong, weak)
        console.print(
            f"{len(labels)} prompts from {labels.source} "
            f"({labels.dropped_contaminated} contaminated dropped); "
            f"strong {strong_model} ({labels.scores[strong_model].mean():.3f}), "
            f"weak {weak_model} ({labels.scores[weak_model].mean():.3f})",
            highlight=False,
        )
        embeddings = _embedder(console, cache_dir)(labels.prompts)
        config = TrainConfig(
            linear_c=linear_c, clusters=clusters, knn_k=knn, length_prior=length_prior, seed=seed
        )
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
        + "). Evaluate with: modelyard router eval --data DATA --cv 5",
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
    cache_dir: CacheOption = None,
    keep_contaminated: KeepContaminated = False,
) -> None:
    """Evaluate a router beside the baselines: table, PNG and HTML plot, metrics JSON.

    Give one of --router FILE, --cv K (the default, K = 5) or --train-data OTHER.
    """
    from modelyard.routing.smart.learned.cost import PairPrices, resolve_price
    from modelyard.routing.smart.learned.data import LabelError, load_labels, pick_pair
    from modelyard.routing.smart.learned.evaluate import evaluate
    from modelyard.routing.smart.learned.plot import write_plots
    from modelyard.routing.smart.learned.train import TrainConfig

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
        config = TrainConfig(
            linear_c=linear_c, clusters=clusters, knn_k=knn, length_prior=length_prior, seed=seed
        )
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
