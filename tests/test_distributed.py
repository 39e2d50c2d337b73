"""Data-parallel runs (pyro_vae.distributed) on 2 CPU processes with gloo, against 1 process.

The noise of a run is keyed on (seed, epoch, step, image rows) (pyro_vae.noise), so a 2-process step
sees the same binarization and ε as the 1-process step on the same global batch; what differs is
only the order of float additions (two partial sums of the batch, then their sum). Tolerances are
relative to each gradient's size: float32 sums of ~10³ terms agree to ~10⁻⁶ of their magnitude.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

import pyro_vae
from pyro_vae import RunConfig
from pyro_vae.annealing import noise_map
from pyro_vae.checkpoint import load_checkpoint
from pyro_vae.evaluate import evaluate
from pyro_vae.noise import GuideNoise, StepNoise, keyed_rows

from . import distributed_worker as worker

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(function, *args) -> None:
    mp.spawn(function, args=(2, free_port(), *args), nprocs=2, join=True)


# -- keyed noise (one process) ---------------------------------------------------------------------------------

def test_keyed_rows_do_not_depend_on_how_the_rows_are_split():
    whole = keyed_rows((1, 2), 0, 150, (3,), (2,), normal=True, device="cpu")
    parts = [keyed_rows((1, 2), a, b, (3,), (2,), normal=True, device="cpu") for a, b in ((0, 37), (37, 64), (64, 150))]
    assert torch.equal(whole, torch.cat(parts, dim=1))
    assert not torch.equal(whole, keyed_rows((1, 3), 0, 150, (3,), (2,), normal=True, device="cpu"))


@pytest.mark.parametrize("guide", ["diagonal_normal", "full_rank", "iaf"])
def test_guide_noise_reparameterizes_the_guide_and_keeps_the_flow_cache(guide):
    import pyro
    from pyro import poutine

    vae, _ = worker.small_vae(guide=guide)
    x = worker.images(10).bernoulli()
    step_noise = StepNoise()
    step_noise.key, step_noise.start = (0, 1, 0), 0
    with GuideNoise(step_noise), pyro.plate("particles", 3, dim=-2):
        trace = poutine.trace(vae.guide).get_trace(x)
    site = trace.nodes["z"]
    if guide == "iaf":  # the density of the drawn z comes from the cache, without inverting the flow
        inverse = site["fn"].transforms[-1]._inverse
        site["fn"].transforms[-1]._inverse = lambda y: pytest.fail("the flow was inverted")
        try:
            log_prob = site["fn"].log_prob(site["value"])
        finally:
            site["fn"].transforms[-1]._inverse = inverse
    eps = step_noise.eps(torch.Size([3, 10]), site["fn"].event_shape, x.device, x.dtype)
    z, log_q = noise_map(site["fn"])(eps)
    assert torch.allclose(site["value"], z, atol=1e-6) and site["value"].requires_grad
    if guide == "iaf":
        assert torch.allclose(log_prob, log_q, atol=1e-4)


def test_a_last_batch_with_fewer_images_than_processes_is_refused():
    from pyro_vae.distributed import World, check_batches
    from pyro_vae.errors import ConfigError

    check_batches(301, 50, World(0, 1))
    check_batches(302, 50, World(0, 2))
    with pytest.raises(ConfigError, match="50 leaves a last batch of 1 of the 301 training images, fewer than the 2"):
        check_batches(301, 50, World(0, 2))


# -- 2 processes ------------------------------------------------------------------------------------------------

CASES = [("elbo", {}, {}, 64),  # shards of 32 within one block of noise
         ("iwae", {"num_particles": 3}, {}, 75),  # uneven shards (37, 38) across blocks, a particle dimension
         ("elbo", {}, {"guide": "iaf"}, 50),
         ("iwae_dreg", {"num_particles": 3}, {"model": "hierarchical", "model_options": {"upper_z_dims": [3]}}, 75)]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """The gradients and the evaluation of tests/distributed_worker.py, from one start of 2 processes."""
    out = tmp_path_factory.mktemp("two_processes")
    spawn(worker.both, CASES, str(out))
    return out


def test_a_two_process_step_equals_the_one_process_step(two_processes, tmp_path):
    """Gradients, not Adam's steps: Adam's update is nearly invariant to a scale of the gradient, so a
    2-process step with DDP's averaged (1/W) gradients would pass a comparison of parameters."""
    worker.gradients(0, 1, 0, CASES, str(tmp_path / "one.pt"))
    for case, one, two in zip(CASES, torch.load(tmp_path / "one.pt"), torch.load(two_processes / "gradients.pt")):
        assert torch.allclose(one["loss"], two["loss"], rtol=1e-5), case
        for name, grad in one["grads"].items():
            scale = grad.abs().max()
            assert (grad - two["grads"][name]).abs().max() <= 1e-5 * scale + 1e-6, (case, name)


def test_sharded_evaluation_equals_unsharded_per_image(two_processes):
    """Bit for bit: the workers run one thread each, so the unsharded evaluation does too (torch's
    matrix products round differently with another number of threads, e.g. CI's default two)."""
    sharded = torch.load(two_processes / "evaluation.pt", weights_only=False)
    vae, _ = worker.small_vae()
    data = worker.images(250).bernoulli(generator=torch.Generator().manual_seed(2))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = evaluate(vae, data, 100, 40, seed=5, psis=True, ks=[1, 10])
    finally:
        torch.set_num_threads(threads)
    assert sharded.elbo.shape == (250,)
    for name in ("elbo", "log_likelihood", "khat"):
        assert torch.equal(getattr(sharded, name), getattr(whole, name)), name
    assert all(torch.equal(sharded.bounds[k], whole.bounds[k]) for k in (1, 10))


# -- runs under torchrun ------------------------------------------------------------------------------------------

def torchrun(data_dir, argv, fail_rank=-1, timeout=240, log_dir=None):
    """torchrun of the worker script on 2 processes; with ``log_dir``, each rank's stdout and stderr
    go to files of their own (``rank_streams``) instead of torchrun's streams."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYRO_VAE_DIST_TIMEOUT": "600"}
    logs = ["--log-dir", str(log_dir), "--redirects", "3"] if log_dir is not None else []
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *logs, "--master_port",
               str(free_port()), str(REPO / "tests" / "distributed_worker.py"), str(data_dir), str(fail_rank), *argv]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout, env=env)


def rank_streams(log_dir: Path) -> dict[int, str]:
    """{rank: its stdout and stderr} from the files torchrun's ``--log-dir --redirects 3`` wrote."""
    streams: dict[int, str] = {}
    for path in sorted(Path(log_dir).rglob("std*.log")):
        rank = int(path.parent.name)
        streams[rank] = streams.get(rank, "") + path.read_text()
    return streams


def flags(data_dir, out, **changes):
    settings = {"data-dir": data_dir, "out": out, "train-size": 300, "val-size": 100, "test-size": 40,
                "eval-samples": 100, "hidden-dims": 32, "batch-size": 50, "num-epochs": 1, **changes}
    return [f"--{name}" if value is True else f"--{name}={value}" for name, value in settings.items()] + ["--no-progress"]


def config(data_dir, out, **changes):
    return RunConfig(data_dir=data_dir, out=out, train_size=300, val_size=100, test_size=40, eval_samples=100,
                     net_options={"hidden_dims": [32]}, batch_size=50, progress=False, **changes)


def close(a: dict, b: dict) -> bool:
    return all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)


def test_a_checkpoint_resumes_at_another_number_of_processes(synthetic_data_dir, tmp_path):
    """1 → 2 and 2 → 1 processes against 2 epochs in one process: equal to float tolerance (the
    sums over a batch are added in another order), and metrics.json records the world."""
    straight = pyro_vae.run(config(synthetic_data_dir, tmp_path / "straight", num_epochs=2))
    two = torchrun(synthetic_data_dir, flags(synthetic_data_dir, tmp_path / "two_one"))
    assert two.returncode == 0, two.stdout + two.stderr
    assert two.stdout.count("test log p(x)") == 1  # one process prints
    metrics = json.loads((tmp_path / "two_one" / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["backend"]) == (2, "gloo")
    two_one = pyro_vae.run(config(synthetic_data_dir, tmp_path / "two_one", num_epochs=2,
                                  resume=tmp_path / "two_one"))
    assert two_one.metrics["world_size"] == 1 and two_one.metrics["backend"] is None

    pyro_vae.run(config(synthetic_data_dir, tmp_path / "one_two", num_epochs=1))
    one_two = torchrun(synthetic_data_dir, flags(synthetic_data_dir, tmp_path / "one_two", **{
        "num-epochs": 2, "resume": tmp_path / "one_two"}))
    assert one_two.returncode == 0, one_two.stdout + one_two.stderr
    reference = straight.vae.state_dict()
    for folder in ("two_one", "one_two"):
        saved = load_checkpoint(tmp_path / folder / "checkpoint.pt")
        assert saved["epoch"] == 2
        assert close(saved["model_state"], load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["model_state"])
        assert close(load_checkpoint(tmp_path / folder / "best.pt")["model_state"], reference)
        metrics = json.loads((tmp_path / folder / "metrics.json").read_text())
        assert metrics["test_log_likelihood"] == pytest.approx(straight.metrics["test_log_likelihood"], abs=1e-3)


def test_a_failing_process_ends_the_run_with_one_message(synthetic_data_dir, tmp_path):
    """Process 1 raises in its second epoch while process 0 waits for it in a collective: the run
    ends long before the collectives' timeout (600 s here) with a non-zero status, the failing
    process prints its one-line message exactly once and the other process none, no worker prints a
    traceback, and the checkpoint of the finished epoch is kept. Each rank's streams are read from
    a file of their own, so the check does not depend on how the scheduler interleaves them."""
    start = time.monotonic()
    result = torchrun(synthetic_data_dir, flags(synthetic_data_dir, tmp_path / "run", **{"num-epochs": 3}),
                      fail_rank=1, timeout=180, log_dir=tmp_path / "logs")
    elapsed = time.monotonic() - start
    streams = rank_streams(tmp_path / "logs")
    report = result.stdout + result.stderr + "".join(f"\n--- rank {r}:\n{text}" for r, text in streams.items())
    assert result.returncode == 1, report  # torchrun's status for a failed worker
    assert sorted(streams) == [0, 1], report
    assert streams[1].count("error: injected failure on rank 1") == 1, report
    assert streams[1].count("error:") == 1 and "error:" not in streams[0], report
    assert "injected failure" not in result.stdout + result.stderr, report  # torchrun's own streams
    assert "ChildFailedError" in result.stderr, report
    assert not any("pyro_vae/" in text for text in streams.values()), report  # no traceback of a worker
    assert elapsed < 150, f"the run took {elapsed:.0f} s"
    assert (tmp_path / "run" / "checkpoint.pt").is_file()


def test_a_two_process_run_resumed_on_two_processes_is_bit_exact(synthetic_data_dir, tmp_path):
    """Same number of processes, same order of float additions: resuming changes nothing at all."""
    for name, epochs in (("straight", 2), ("resumed", 1)):
        result = torchrun(synthetic_data_dir, flags(synthetic_data_dir, tmp_path / name, **{"num-epochs": epochs}))
        assert result.returncode == 0, result.stdout + result.stderr
    result = torchrun(synthetic_data_dir, flags(synthetic_data_dir, tmp_path / "resumed", **{
        "num-epochs": 2, "resume": tmp_path / "resumed"}))
    assert result.returncode == 0, result.stdout + result.stderr
    straight, resumed = (load_checkpoint(tmp_path / name / "checkpoint.pt") for name in ("straight", "resumed"))
    assert all(torch.equal(straight["model_state"][k], v) for k, v in resumed["model_state"].items())
    metrics = [json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("straight", "resumed")]
    for key in ("test_elbo", "test_log_likelihood", "val_elbo"):
        assert metrics[0][key] == metrics[1][key], key
    assert [r["train_elbo"] for r in metrics[0]["history"]] == [r["train_elbo"] for r in metrics[1]["history"]]
