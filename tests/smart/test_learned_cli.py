"""`modelyard router train` / `router eval` end to end, on a small slice of the shipped RouteLLM
labels (real MiniLM embeddings, real scikit-learn training, real plots).

Skips when ../shared/data is absent (it is never copied into the repository).
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from modelyard.cli import app
from modelyard.routing.smart.learned.runtime import LearnedRouter

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "routing"
STRONG = "gpt-4-1106-preview"
SUBJECTS = ("high_school_mathematics", "high_school_us_history", "college_medicine", "marketing")

pytestmark = pytest.mark.skipif(
    not (DATA / "mmlu").is_dir() or not (DATA / "gsm8k").is_dir(),
    reason=f"the shipped routing labels are not at {DATA} (see ../shared/data/README.md)",
)


def _slice(source: Path, target: Path, rows: int) -> None:
    csv.field_size_limit(sys.maxsize)
    with (
        source.open(newline="", encoding="utf-8") as f_in,
        target.open("w", newline="", encoding="utf-8") as f_out,
    ):
        reader = csv.reader(f_in)
        writer = csv.writer(f_out)
        for index, row in enumerate(reader):
            if index > rows:
                break
            writer.writerow(row)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("router-cli")
    (root / "mmlu").mkdir()
    for subject in SUBJECTS:
        _slice(DATA / "mmlu" / f"mmlu_{subject}.csv", root / "mmlu" / f"mmlu_{subject}.csv", 30)
    (root / "gsm8k").mkdir()
    _slice(DATA / "gsm8k" / "gsm8k_responses.csv", root / "gsm8k" / "gsm8k_responses.csv", 80)
    yield root


def invoke(workspace: Path, *args: str) -> tuple[int, str]:
    runner = CliRunner()
    result = runner.invoke(
        app, ["router", *args, "--cache-dir", str(workspace / "cache")], catch_exceptions=False
    )
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


@pytest.fixture(scope="module")
def trained(workspace: Path) -> Path:
    out = workspace / "router.json"
    code, output = invoke(
        workspace, "train", "--data", str(workspace / "mmlu"), "--out", str(out), "--clusters", "10"
    )
    assert code == 0, output
    assert "wrote" in output
    return out


def test_train_writes_a_loadable_router(trained: Path, workspace: Path) -> None:
    router = LearnedRouter.load(trained)
    assert router.strong == STRONG
    assert router.weak == "mistralai/Mixtral-8x7B-Instruct-v0.1"
    assert router.metadata["prompts"] == 30 * len(SUBJECTS)
    assert router.threshold_for_share(0.5) > router.threshold_for_share(0.8)


def _check_outputs(folder: Path, name: str) -> dict[str, object]:
    png = (folder / f"{name}.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    page = (folder / f"{name}.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and page.rstrip().endswith("</html>")
    assert "learned router" in page and "<script" not in page  # self-contained, static
    metrics: dict[str, object] = orjson.loads((folder / f"{name}.json").read_bytes())
    return metrics


def test_eval_router_file_out_of_domain_with_prices(trained: Path, workspace: Path) -> None:
    out = workspace / "eval-file"
    code, output = invoke(
        workspace, "eval", "--data", str(workspace / "gsm8k"), "--router", str(trained),
        "--out-dir", str(out), "--resamples", "50", "--strong-price", "10,30", "--weak-price", "0.6",
    )  # fmt: skip
    assert code == 0, output
    for row in ("always weak", "always strong", "random", "oracle", "prompt length", "TF-IDF kNN", "learned"):
        assert row in output
    metrics = _check_outputs(out, "router-eval")
    routers = metrics["routers"]
    assert isinstance(routers, dict)
    learned = routers["learned router"]
    assert 0.0 < learned["grid"]["apgr"] < 1.5
    low, high = learned["grid_ci95"]
    assert low["apgr"] <= learned["grid"]["apgr"] <= high["apgr"]
    assert routers["oracle"]["grid"]["apgr"] > 1.0
    assert "output tokens counted in the shipped responses" in str(metrics["cost_note"])


def test_eval_cross_fitted_with_group_prior(workspace: Path) -> None:
    out = workspace / "eval-cv"
    code, output = invoke(
        workspace, "eval", "--data", str(workspace / "mmlu"), "--cv", "3", "--out-dir", str(out),
        "--name", "mmlu-cv", "--resamples", "50", "--clusters", "10",
    )  # fmt: skip
    assert code == 0, output
    assert "3-fold cross-fitting" in output
    assert "group prior (gold subject)" in output
    metrics = _check_outputs(out, "mmlu-cv")
    assert metrics["prompts"] == 30 * len(SUBJECTS)


def test_eval_out_of_domain_training(workspace: Path) -> None:
    out = workspace / "eval-ood"
    code, output = invoke(
        workspace, "eval", "--data", str(workspace / "gsm8k"), "--train-data", str(workspace / "mmlu"),
        "--out-dir", str(out), "--resamples", "20", "--clusters", "10",
    )  # fmt: skip
    assert code == 0, output
    assert "out of domain" in output


def test_bad_inputs_fail_in_one_clear_line(workspace: Path, trained: Path) -> None:
    bad = workspace / "bad.csv"
    bad.write_text(f"prompt,{STRONG},other\nq,True,perhaps\n", encoding="utf-8")
    code, output = invoke(workspace, "train", "--data", str(bad), "--out", str(workspace / "x.json"))
    assert code == 2
    assert f"{bad}:2: column 'other' holds 'perhaps'" in output.replace("\n", "")
    assert "Traceback" not in output

    not_router = workspace / "not-router.json"
    not_router.write_text('{"format": "something-else"}', encoding="utf-8")
    code, output = invoke(workspace, "eval", "--data", str(workspace / "gsm8k"), "--router", str(not_router))
    assert code == 2 and "is not a modelyard router file" in output and "Traceback" not in output

    code, output = invoke(
        workspace, "eval", "--data", str(workspace / "gsm8k"), "--router", str(trained), "--cv", "3"
    )
    assert code == 2 and "only one of --router, --cv and --train-data" in output

    code, output = invoke(
        workspace, "eval", "--data", str(workspace / "gsm8k"), "--router", str(trained),
        "--strong-price", "ten dollars",
    )  # fmt: skip
    assert code == 2 and "INPUT,OUTPUT in USD per million tokens" in output

    code, output = invoke(workspace, "train", "--data", str(workspace / "absent"))
    assert code == 2 and "no such file or folder" in output


def test_eval_on_the_training_prompts_says_in_sample(trained: Path, workspace: Path) -> None:
    code, output = invoke(
        workspace, "eval", "--data", str(workspace / "mmlu"), "--router", str(trained),
        "--out-dir", str(workspace / "eval-in-sample"), "--resamples", "20",
    )  # fmt: skip
    assert code == 0, output
    assert "IN-SAMPLE" in output


def test_train_and_eval_with_the_bounded_window(workspace: Path) -> None:
    out = workspace / "router-window.json"
    code, output = invoke(
        workspace, "train", "--data", str(workspace / "mmlu"), "--out", str(out), "--clusters", "10",
        "--input", "window",
    )  # fmt: skip
    assert code == 0, output
    router = LearnedRouter.load(out)
    assert router.window is not None and (router.window.head, router.window.tail) == (48, 14)
    assert router.representation.static
    code, output = invoke(
        workspace, "eval", "--data", str(workspace / "gsm8k"), "--router", str(out),
        "--out-dir", str(workspace / "eval-window"), "--resamples", "20",
    )  # fmt: skip
    assert code == 0, output  # the router file says how to embed: no --input needed
    assert "learned router" in output
    code, output = invoke(workspace, "train", "--data", str(workspace / "mmlu"), "--input", "half")
    assert code != 0 and "half" in output
