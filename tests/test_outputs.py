"""The output folder: one run at a time (a kernel lock that a kill -9 cannot leave stale), no silent
replacement of a run, every file written atomically, problems found before training."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pyro_vae import outputs
from pyro_vae.checkpoint import load_checkpoint
from pyro_vae.cli import main
from pyro_vae.errors import ExistingRunError, OutputError, RunInUseError
from pyro_vae.outputs import RunDirectory, atomic_write, write_json

from .conftest import REPO, exit_status
from .test_example import quick_args


def claim(folder, **kwargs):
    with RunDirectory(folder).claim(**kwargs):
        pass


def test_atomic_write_leaves_the_old_file_whole_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"test_elbo": -100.0})

    def half_then_disk_full(file):
        file.write(b'{"test_elbo": ')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match=r"cannot write .*metrics.json: No space left on device; the disk is full"):
        atomic_write(target, half_then_disk_full)
    assert json.loads(target.read_text()) == {"test_elbo": -100.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temporary file left


def test_a_second_run_on_a_locked_folder_fails_at_once_naming_the_first(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    with outputs.locked(folder):
        start = time.perf_counter()
        with pytest.raises(RunInUseError, match=rf"in use by another run \(pid {os.getpid()} on "):
            claim(folder, fresh=True)
        # at once: the lock is not waited for (a wait would last as long as this block holds it); 10 s leaves
        # room for a loaded machine
        assert time.perf_counter() - start < 10.0
    with RunDirectory(folder).claim(fresh=True):  # released: free again
        pass


def test_a_killed_run_leaves_no_stale_lock(tmp_path):
    """kill -9 of the holder: the kernel drops its flock, and the next run takes the folder."""
    folder = tmp_path / "run"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from pyro_vae.outputs import locked
        with locked(Path({str(folder)!r})):
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUseError, match=f"pid {holder.pid}"):
            claim(folder, fresh=True)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with RunDirectory(folder).claim(fresh=True):
        pass


def test_a_fresh_run_refuses_a_folder_holding_a_run_and_overwrite_removes_only_run_files(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "checkpoint.pt").write_bytes(b"old")
    (folder / "manifold.png").write_bytes(b"old")
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ExistingRunError, match=r"already holds a run \(checkpoint.pt, manifold.png\).*--overwrite"):
        claim(folder, fresh=True)
    assert (folder / "checkpoint.pt").read_bytes() == b"old"
    with RunDirectory(folder).claim(fresh=True, overwrite=True):
        pass
    assert sorted(p.name for p in folder.iterdir()) == [".pyro_vae.lock", "notes.txt"]
    with RunDirectory(folder).claim(fresh=False):  # continuing a run in its own folder is not a conflict
        pass


def test_stale_temporary_files_are_cleaned_when_the_folder_is_claimed(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    for name in (".metrics.json.abc.pyro_vae.tmp", "checkpoint.pt.x1y2.tmp", "mine.tmp"):
        (folder / name).write_bytes(b"partial")
    with RunDirectory(folder).claim(fresh=True):
        pass
    assert sorted(p.name for p in folder.iterdir()) == [".pyro_vae.lock", "mine.tmp"]


def test_an_output_path_that_is_a_file_or_unwritable_fails_before_any_work(tmp_path, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="is a file; choose a folder"):
        claim(a_file, fresh=True)
    with pytest.raises(OutputError, match="cannot create the output folder"):
        claim(a_file / "below", fresh=True)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(outputs.tempfile, "mkstemp", read_only)
    with pytest.raises(OutputError, match="Read-only file system; choose a folder you can write to"):
        claim(tmp_path / "ro", fresh=True)


def test_too_little_free_space_is_found_before_training(tmp_path):
    with pytest.raises(OutputError, match="MiB free, but this run writes about"):
        claim(tmp_path / "run", fresh=True, needed_bytes=2 ** 62)


def test_the_main_job_refuses_to_replace_a_run_and_keeps_it(synthetic_data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(quick_args(synthetic_data_dir, out, "--num-epochs", "1")) == 0
    before = (out / "checkpoint.pt").read_bytes()
    assert main(quick_args(synthetic_data_dir, out, "--num-epochs", "1", "--seed", "3")) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and f"--resume {out}" in err and "--overwrite" in err
    assert (out / "checkpoint.pt").read_bytes() == before
    assert main(quick_args(synthetic_data_dir, out, "--num-epochs", "1", "--seed", "3", "--overwrite")) == 0
    assert json.loads((out / "metrics.json").read_text())["config"]["run"]["seed"] == 3


def test_a_full_disk_while_writing_results_keeps_the_earlier_results(synthetic_data_dir, tmp_path, capsys,
                                                                      monkeypatch):
    """Evaluation rewrites evaluation.pt and metrics.json; a write that fails (injected ENOSPC) ends
    in one line naming the file, and the earlier files stay whole and loadable."""
    out = tmp_path / "run"
    assert main(quick_args(synthetic_data_dir, out, "--num-epochs", "1")) == 0
    before = {name: (out / name).read_bytes() for name in ("metrics.json", "evaluation.pt")}
    real_replace = os.replace

    def full_disk(src, dst):
        if str(dst).endswith("evaluation.pt"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", full_disk)
    argv = quick_args(synthetic_data_dir, out, "--resume", str(out), "--evaluate-only", "--eval-samples", "200")
    assert exit_status(main, argv) == 2
    err = capsys.readouterr().err
    assert f"cannot write {out / 'evaluation.pt'}: No space left on device; the disk is full" in err
    assert len(err.strip().splitlines()) == 1
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_kill_9_mid_training_leaves_a_loadable_checkpoint_and_no_lock(synthetic_data_dir, tmp_path):
    """A run killed with SIGKILL between and during checkpoint writes: the folder keeps whole files
    only (the hash checks), no lock is left, and the run resumes to the end."""
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.conftest import accept_as_real
        from pathlib import Path
        accept_as_real(Path({str(synthetic_data_dir)!r}))
        from pyro_vae.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    argv = quick_args(synthetic_data_dir, out, "--num-epochs", "200", "--train-size", "500")
    process = subprocess.Popen([sys.executable, "-c", script, *argv], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "checkpoint.pt").exists():
            time.sleep(0.05)
        time.sleep(0.3)  # some epochs later, likely inside a write
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    epoch = load_checkpoint(out / "checkpoint.pt")["epoch"]
    assert 1 <= epoch < 200
    assert load_checkpoint(out / "best.pt")["kind"] == "model"
    resumed = quick_args(synthetic_data_dir, out, "--num-epochs", str(epoch + 1), "--train-size", "500",
                         "--resume", str(out))
    assert main(resumed) == 0  # no stale lock, and the stale temporary files are cleaned
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == epoch + 1
