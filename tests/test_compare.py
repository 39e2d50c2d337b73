"""The comparison statistics (pyro_vae.compare, pyro_vae.stats) against hand computations, and the
command line's --help as a person reads it."""

import math
import re
from pathlib import Path

import pytest
import torch

from pyro_vae.cli import build_parser
from pyro_vae.compare import Group, RunRecord, format_value, markdown_table, summarize
from pyro_vae.registry import REGISTRIES
from pyro_vae.stats import mean_and_stderr, paired_difference

from .conftest import REPO


def test_mean_and_stderr_is_s_over_root_n():
    mean, stderr = mean_and_stderr([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3)
    s = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    assert stderr == pytest.approx(s / math.sqrt(3))
    assert math.isnan(mean_and_stderr([5.0])[1])
    with pytest.raises(ValueError, match="no values"):
        mean_and_stderr([])


def test_pairing_removes_the_spread_the_images_share():
    """Two models whose per-image log-likelihoods differ by a constant 0.5 plus small noise: the
    paired error is that of the noise, far below the unpaired one."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(1000, generator=generator, dtype=torch.float64) * 20  # the images differ a lot
    a = images + 0.5 + 0.1 * torch.randn(1000, generator=generator, dtype=torch.float64)
    mean, stderr = paired_difference(a, images)
    assert abs(mean - 0.5) < 4 * stderr and stderr == pytest.approx(0.1 / math.sqrt(1000), rel=0.1)
    assert stderr < mean_and_stderr(a)[1] / 50
    with pytest.raises(ValueError, match="same items"):
        paired_difference(a, images[:10])


def record(elbo, log_likelihood, per_image, khat_share=None, stderr=0.1):
    metrics = {"test_elbo": elbo, "test_log_likelihood": log_likelihood, "test_elbo_stderr": stderr,
               "test_log_likelihood_stderr": stderr, "psis_khat_share_above_0.7": khat_share}
    return RunRecord(Path("."), metrics, {"log_likelihood": torch.tensor(per_image, dtype=torch.float64)})


def test_summarize_one_seed_uses_the_image_error_and_pairs_per_image():
    groups = [Group("a", [record(-100.0, -95.0, [-94.0, -96.0, -95.0])], {"objective": "elbo"}),
              Group("b", [record(-101.0, -94.0, [-93.0, -95.5, -93.5])], {"objective": "iwae"})]
    rows = summarize(groups, ["test_elbo", "test_log_likelihood", "psis_khat_share_above_0.7"])
    assert rows[0]["objective"] == "elbo" and rows[0]["seeds"] == 1
    assert rows[0]["test_elbo"] == -100.0 and rows[0]["test_elbo_se"] == 0.1  # the error over test images
    assert rows[0]["delta_log_likelihood"] == 0.0
    differences = torch.tensor([1.0, 0.5, 1.5], dtype=torch.float64)
    assert rows[1]["delta_log_likelihood"] == pytest.approx(differences.mean().item())
    assert rows[1]["delta_log_likelihood_se"] == pytest.approx((differences.std() / math.sqrt(3)).item())
    assert rows[1]["psis_khat_share_above_0.7"] is None and rows[1]["psis_khat_share_above_0.7_se"] is None


def test_summarize_several_seeds_uses_the_error_over_seeds():
    groups = [Group("a", [record(-100.0, -95.0, [-95.0, -95.0]), record(-102.0, -97.0, [-97.0, -97.0])]),
              Group("b", [record(-99.0, -94.0, [-94.0, -93.0]), record(-100.0, -95.0, [-96.0, -95.0])])]
    rows = summarize(groups, ["test_elbo"])
    assert rows[0]["test_elbo"] == -101.0 and rows[0]["test_elbo_se"] == pytest.approx(1.0)  # |a − b| / 2
    # per-seed paired means: 1.5 and 1.5 -> 1.5 ± 0
    assert rows[1]["delta_log_likelihood"] == pytest.approx(1.5) and rows[1]["delta_log_likelihood_se"] == 0.0
    mismatched = [groups[0], Group("c", [record(-1.0, -1.0, [-1.0, -1.0, -1.0])] * 2)]
    assert summarize(mismatched, [])[1]["delta_log_likelihood"] is None  # not the same test images: n/a


def test_missing_values_show_as_n_a():
    assert format_value(None) == "n/a" and format_value(float("nan"), 0.1) == "n/a"
    assert format_value(1.234, None) == "1.23" and format_value(1.234, float("nan")) == "1.23"
    assert format_value(1.234, 0.05, 1) == "1.2 ± 0.1"
    table = markdown_table([{"name": "x", "v": None, "w": 2.0, "w_se": 0.5}],
                           [("name", "name", None), ("v", "v", 2), ("w", "w", 1)])
    assert table.splitlines() == ["| name | v | w |", "| --- | ---: | ---: |", "| x | n/a | 2.0 ± 0.5 |"]


# -- --help -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def help_text():
    description = (REPO / "examples" / "mnist_svi.py").read_text().split('"""')[1]
    return description, build_parser(description, prog="mnist_svi.py").format_help()


def test_help_keeps_the_example_commands_as_written(help_text):
    description, text = help_text
    for line in description.splitlines():
        if line.strip().startswith("python "):
            assert line in text.splitlines(), line


def test_help_shows_each_default_once_with_readable_metavars(help_text):
    _, text = help_text
    entries = re.split(r"\n  (?=-)", text.split("options:", 1)[1])
    for entry in entries:
        assert entry.count("(default:") <= 1, entry
        assert "(default: None)" not in entry and "__" not in entry, entry
    assert "--z-dim N " in text and "--hidden-dims N [N ...]" in text and "--flow-depth N" in text
    assert "--lr X " in text and "--resume PATH" in text and "--out DIR" in text


def test_help_shows_each_pieces_summary_whole(help_text):
    _, text = help_text
    flat = " ".join(text.split())
    for kind, registry in REGISTRIES.items():
        for entry in registry:
            assert f"{entry.name}: {entry.summary}" in flat, (kind, entry.name)
