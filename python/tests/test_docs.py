"""The worked example in docs/python.md runs top to bottom, and the README's quick start."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def blocks(path, marker):
    text = (ROOT / path).read_text()
    return [b for m, b in re.findall(r"```python( [a-z-]+)?\n(.*?)```", text, re.S) if (m or "").strip() == marker]


def test_docs_worked_example(tmp_path, monkeypatch):
    pytest.importorskip("torch", reason="the worked example trains a torch network (torch is not installed)")
    pytest.importorskip("onnxscript", reason="torch's ONNX exporter needs onnxscript")
    code = blocks("docs/python.md", "example")
    assert code, "docs/python.md has no ```python example block"
    monkeypatch.chdir(tmp_path)
    scope = {}
    for b in code:
        exec(compile(b, "docs/python.md", "exec"), scope)


def test_readme_quick_start(tmp_path, monkeypatch):
    code = blocks("README.md", "quickstart")
    assert code, "README.md has no ```python quickstart block"
    monkeypatch.chdir(ROOT)
    scope = {}
    for b in code:
        exec(compile(b, "README.md", "exec"), scope)
