"""The code of docs/python.md and of the README's "Use from Python" section runs as written (on small
synthetic data standing in for MNIST), so the pages cannot drift from the library."""

import re

import pytest

from .conftest import REPO, make_synthetic_mnist


@pytest.fixture(scope="module")
def stand_in_mnist(tmp_path_factory):
    """Synthetic MNIST with room for the default 1000 validation images."""
    return make_synthetic_mnist(tmp_path_factory.mktemp("stand_in"), n_train=1500, n_test=200, seed=2)


def python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("page", ["docs/python.md", "README.md"])
def test_the_pages_python_code_runs(page, stand_in_mnist, tmp_path, monkeypatch, capsys):
    blocks = python_blocks(REPO / page)
    assert blocks, f"{page} has no Python code"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYRO_VAE_DATA", str(stand_in_mnist))
    namespace = {"__name__": "__page__"}
    for block in blocks:
        exec(compile(block, f"{page} (python block)", "exec"), namespace)  # noqa: S102
    if page == "docs/python.md":
        assert (tmp_path / "results" / "quick" / "best.pt").is_file()
        assert all((tmp_path / name).stat().st_size > 0 for name in ("samples.png", "reconstructions.png", "khat.png"))
        printed = capsys.readouterr().out
        assert "takes images of shape (N, 1, 28, 28): reshape with x.reshape(-1, 1, 28, 28)" in printed
        assert "['net_options', 'out']" in printed


def test_pages_hold_no_control_characters():
    """LaTeX written through an unescaped Python string loses its backslashes: "\\alpha" becomes a
    bell character and "\\nabla" a line break (docs/derivation.md had four such formulas)."""
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = page.read_text()
        bad = sorted({hex(ord(c)) for c in text if ord(c) < 32 and c != "\n"})
        assert not bad, (page.name, bad)
        assert "$$\nabla" not in text, page.name


def test_every_tutorial_opens_with_its_question_and_ends_with_its_equation_and_code():
    """Each tutorial is executed by the docs build (a failing cell, such as a stated number that no
    longer holds, fails it); here, its shape: a MyST notebook that asks its question first and
    closes on the equation and the code, linked to the derivation, listed in the index."""
    folder = REPO / "docs" / "tutorials"
    pages = sorted(folder.glob("0*.md"))
    assert len(pages) == 8
    index = (folder / "index.md").read_text()
    for page in pages:
        text = page.read_text()
        assert text.startswith("---\nfile_format: mystnb\n"), page.name
        body = text.split("\n# ", 1)[1]
        assert "**The question.**" in body.split("```")[0], page.name
        closing = body.rsplit("**The equation and the code.**", 1)
        assert len(closing) == 2 and "(../derivation.md)" in closing[1] and "```" not in closing[1], page.name
        assert "glue(" in text and "assert " in text, page.name  # numbers glued from the code, and checked
        assert page.stem in index, page.name
