"""The torchvision compatibility import: patches only where the plain import fails, and then the
parts we use work. Run in a fresh interpreter so that no earlier import hides the behaviour."""

import subprocess
import sys
import textwrap


def test_torchvision_parts_we_use_work_and_the_patch_is_applied_only_when_needed(tmp_path):
    script = textwrap.dedent(f"""
        import importlib.util, subprocess, sys
        plain = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
        from pyro_vae import _torchvision
        torchvision = _torchvision.torchvision
        # patched exactly when the plain import fails, and then for the known reason
        assert _torchvision.PATCHED == (plain.returncode != 0), plain.stderr[-500:]
        if plain.returncode != 0:
            assert "torchvision::nms does not exist" in plain.stderr
        import torch
        from torchvision.utils import make_grid, save_image
        from torchvision import datasets, transforms
        grid = make_grid(torch.rand(6, 1, 28, 28), nrow=3, padding=2)
        assert grid.shape == (3, 2 * 30 + 2, 3 * 30 + 2), grid.shape
        save_image(grid, r"{tmp_path / 'grid.png'}")
        assert transforms.ToTensor()(__import__("numpy").zeros((4, 4), dtype="uint8")).shape == (1, 4, 4)
        assert hasattr(datasets, "MNIST") and hasattr(datasets, "FashionMNIST")
        print("ok", _torchvision.PATCHED)
    """)
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ok")
    assert (tmp_path / "grid.png").stat().st_size > 0
