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
