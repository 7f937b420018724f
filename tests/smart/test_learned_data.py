"""Label files: RouteLLM folders, CSV and JSONL load; contaminated prompts drop; each kind of bad
file fails with a LabelError naming the file (and line) and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.routing.smart.learned.cost import count_tokens
from modelyard.routing.smart.learned.data import LabelError, load_labels, pick_pair

A, B = "gpt-4-1106-preview", "mistralai/Mixtral-8x7B-Instruct-v0.1"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_routellm_folder_with_subjects_and_contamination(tmp_path: Path) -> None:
    write(tmp_path / "mmlu_anatomy.csv", f'prompt,{B},{A}\n"Q1\nA. x\nAnswer:",True,True\nQ2,False,True\n')
    write(tmp_path / "mmlu_virology.csv", f"prompt,{B},{A}\nQ3,False,False\nQ4,False,False\n")
    write(tmp_path / "contaminated_prompts.jsonl", '{"train_prompt": "Qx", "eval_prompt": "Q4"}\n')
    labels = load_labels(tmp_path)
    assert labels.prompts == ["Q1\nA. x\nAnswer:", "Q2", "Q3"]
    assert labels.groups == ["anatomy", "anatomy", "virology"]
    assert labels.dropped_contaminated == 1
    assert list(labels.scores[A]) == [1.0, 1.0, 0.0]
    assert pick_pair(labels, None, None) == (A, B)
    assert len(load_labels(tmp_path, drop_contaminated=False)) == 4


def test_csv_with_responses_counts_output_tokens(tmp_path: Path) -> None:
    path = write(
        tmp_path / "labels.csv",
        f"prompt,{B},{A},{B}_response,{A}_response\n"
        "What is 2+2?,1,1,The answer is 4.,4\nHard?,0,0.5,no,hmm\n",
    )
    labels = load_labels(path)
    assert labels.models == [B, A]
    assert labels.output_tokens[B][0] == count_tokens("The answer is 4.") > 3  # cl100k_base tokens
    assert labels.scores[A][1] == 0.5


def test_jsonl_user_labels(tmp_path: Path) -> None:
    path = write(
        tmp_path / "mine.jsonl",
        '{"prompt": "summarise this", "scores": {"big": 0.9, "small": 0.7}, "group": "summary"}\n'
        "\n"
        '{"prompt": "extract the date", "scores": {"big": 1, "small": true}}\n',
    )
    labels = load_labels(path)
    assert labels.prompts == ["summarise this", "extract the date"]
    assert labels.groups == ["summary", ""]
    assert pick_pair(labels, None, None) == ("big", "small")
    assert pick_pair(labels, "small", None) == ("small", "big")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.csv", f"question,{A},{B}\nq,True,False\n", "no 'prompt' column"),
        ("x.csv", f"prompt,{A}\nq,True\nr,False\n", "needs quality labels for at least two models"),
        ("x.csv", f"prompt,{A},{B}\nq,True,maybe\nr,True,True\n", r"x\.csv:2: column .* holds 'maybe'"),
        ("x.csv", f"prompt,{A},{B}\nq,True,1.5\nr,True,True\n", "scores must lie in"),
        ("x.csv", f"prompt,{A},{B}\nq,True,\nr,True,True\n", "no score for model"),
        ("x.jsonl", '{"prompt": "q", "scores": {"a": 1, "b": 0}\n', r"x\.jsonl:1: not valid JSON"),
        ("x.jsonl", '{"prompt": "q", "scores": {"a": 2, "b": 0}}\n', "scores must be numbers in"),
        ("x.jsonl", '{"prompt": "", "scores": {"a": 1, "b": 0}}\n', "'prompt' must be a non-empty string"),
        ("x.jsonl", '{"prompt": "q", "scores": {"a": 1}}\n{"prompt": "r", "scores": {"a": 0}}', "one model"),
        ("x.jsonl", "\n\n", "no labelled lines"),
        ("x.txt", "hello", "unknown label format"),
    ],
)
def test_bad_label_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(LabelError, match=message) as info:
        load_labels(path)
    assert str(path) in str(info.value)


def test_missing_paths_and_pairs(tmp_path: Path) -> None:
    with pytest.raises(LabelError, match="no such file or folder"):
        load_labels(tmp_path / "nope")
    with pytest.raises(LabelError, match=r"a folder with no \.csv label files"):
        load_labels(tmp_path)
    path = write(
        tmp_path / "three.jsonl",
        '{"prompt": "q", "scores": {"a": 1, "b": 0, "c": 1}}\n'
        '{"prompt": "r", "scores": {"a": 0, "b": 0, "c": 1}}\n',
    )
    labels = load_labels(path)
    with pytest.raises(LabelError, match="name the pair with --strong and --weak"):
        pick_pair(labels, None, None)
    with pytest.raises(LabelError, match="--strong 'z' is not a model"):
        pick_pair(labels, "z", "a")
    assert pick_pair(labels, "c", "a") == ("c", "a")
