"""The Python entry points check what they are given and say what they expect: evaluate, fit,
sample, reconstruct, load. (Issue #9: uint8 images, (N, 784) images, grey levels under a Bernoulli
likelihood and vae.sample(0) ended deep inside Pyro or torch.)"""

import subprocess
import sys

import pytest
import torch

import pyro_vae
from pyro_vae import InputError, build_vae, evaluate, fit, make_config, make_objective
from pyro_vae.evaluate import log_weights

X_SHAPE = (1, 6, 6)


@pytest.fixture
def vae():
    return build_vae(make_config(X_SHAPE, 3, options={"net": {"hidden_dims": [8]}}))


def binary(n=4):
    return torch.bernoulli(torch.full((n, *X_SHAPE), 0.3))


@pytest.mark.parametrize("make_bad,message", [
    (lambda x: (x * 255).to(torch.uint8), ("has dtype torch.uint8; images must be floating point in [0, 1]: convert "
                                          "with x.float() / 255")),
    (lambda x: x.reshape(len(x), -1), ("has shape (4, 36); this model takes images of shape (N, 1, 6, 6): reshape with "
                                      "x.reshape(-1, 1, 6, 6)")),
    (lambda x: x[:, 0], "has shape (4, 6, 6); this model takes images of shape (N, 1, 6, 6): reshape"),
    (lambda x: x * 0.5, ("4 of 4 images have values outside {0, 1} (binary images), the support of the Bernoulli "
                        "likelihood")),
    (lambda x: x.double(), "has dtype torch.float64 but the model's parameters are torch.float32"),
    (lambda x: x[:0], "holds no images"),
    (lambda x: x.tolist(), "must be a torch.Tensor of images, got list"),
    (lambda x: torch.where(torch.arange(4).view(4, 1, 1, 1) == 2, float("nan"), x), "1 of 4 images hold NaN"),
])
def test_evaluate_and_reconstruct_say_what_images_they_expect(vae, make_bad, message):
    bad = make_bad(binary())
    with pytest.raises(InputError) as error:
        evaluate(vae, bad, num_samples=2)
    assert message in str(error.value)
    with pytest.raises(InputError):
        vae.reconstruct(bad)


def test_the_model_and_guide_check_shape_and_dtype_on_every_call_without_reading_values(vae):
    """Metadata checks run inside the Pyro programs (free, so training keeps them); a training step
    with uint8 or flattened images fails with the same message instead of deep in torch."""
    loss = make_objective("elbo")(vae.model, vae.guide)
    with pytest.raises(InputError, match="uint8"):
        loss(binary().to(torch.uint8))
    with pytest.raises(InputError, match="reshape with x.reshape"):
        loss(binary().reshape(4, 36))


def test_the_device_is_checked(vae):
    with pytest.raises(InputError, match="is on meta but the model is on cpu: move it with x.to"):
        evaluate(vae, torch.empty(4, *X_SHAPE, device="meta"))


@pytest.mark.parametrize("n", [0, -3, 2.5, True, "5", None])
def test_sample_needs_a_positive_integer(vae, n):
    with pytest.raises(InputError, match="n must be a positive integer"):
        vae.sample(n)


def test_sample_and_reconstruct_work_on_good_input(vae):
    assert vae.sample(3).shape == (3, *X_SHAPE)
    assert vae.reconstruct(binary()).shape == (4, *X_SHAPE)


@pytest.mark.parametrize("kwargs,message", [
    ({"num_samples": 0}, "num_samples must be a positive integer"),
    ({"num_samples": 1.5}, "num_samples must be a positive integer"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"num_samples": 10, "ks": [20]}, "each K must be an integer in 1..num_samples = 10"),
    ({"num_samples": 10, "psis": True}, "psis=True needs num_samples >= 100"),
])
def test_evaluate_checks_its_counts(vae, kwargs, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        evaluate(vae, binary(), **kwargs)
    with pytest.raises(InputError, match="needs a pyro_vae.VAE"):
        evaluate("model.pt", binary())


def test_log_weights_checks_its_counts(vae):
    with pytest.raises(InputError, match="num_samples must be a positive integer"):
        log_weights(vae, binary(), 0)
    with pytest.raises(InputError, match="chunk_size must be a positive integer"):
        log_weights(vae, binary(), 3, chunk_size=-1)


def test_fit_checks_its_arguments_and_its_batches(vae):
    loss = make_objective("elbo")(vae.model, vae.guide)
    optimizer = torch.optim.Adam(vae.parameters())
    x = binary(8)
    cases = [
        ({"loss": "elbo"}, "loss must be callable"),
        ({"optimizer": vae.parameters()}, "optimizer must be a torch.optim.Optimizer"),
        ({"batches": [x]}, "batches must be a function returning one epoch's batches"),
        ({"num_epochs": -1}, "num_epochs must be an integer >= 0"),
        ({"batches": lambda: [x.to(torch.uint8)]}, "batches() gave torch.uint8 images in epoch 1"),
        ({"batches": lambda: [x.tolist()]}, "batches() must yield tensors of images"),
        ({"batches": list}, "batches() gave no batch in epoch 1"),
    ]
    for change, message in cases:
        arguments = {"loss": loss, "optimizer": optimizer, "batches": lambda: [x], "num_epochs": 1, **change}
        with pytest.raises(InputError) as error:
            fit(arguments.pop("loss"), arguments.pop("optimizer"), arguments.pop("batches"), arguments.pop("num_epochs"),
                progress=False, verbose=False)
        assert message in str(error.value), (change, str(error.value))


def test_grey_levels_under_a_bernoulli_likelihood_are_refused_in_training_when_validation_is_on(vae):
    """Pyro's validation (on by default in Pyro, and in these tests) is when values are read during
    a step; the VAE then says what is wrong instead of Pyro's support error deep in a trace."""
    loss = make_objective("elbo")(vae.model, vae.guide)
    with pytest.raises(InputError, match="outside {0, 1}"):
        fit(loss, torch.optim.Adam(vae.parameters()), lambda: [binary() * 0.5], 1, progress=False, verbose=False)


def test_import_pyro_vae_makes_torchvision_importable():
    """Issue #9: `import pyro_vae, torchvision` failed with `operator torchvision::nms does not exist`."""
    result = subprocess.run([sys.executable, "-c", ("import pyro_vae, torchvision; "
                             "from torchvision.utils import make_grid; print(torchvision.__version__)")],
                            check=False, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_load_refuses_non_paths_with_a_clear_message(tmp_path):
    with pytest.raises(pyro_vae.CheckpointError, match="no such checkpoint file or run folder"):
        pyro_vae.load(tmp_path / "nothing")
