"""`keras-adalink train` across processes: 2 local jax processes with 4
simulated CPU devices each (gloo collectives) form one 8-device mesh, and
must train exactly what one process with 8 devices trains.

Each command has its own timeout and every process started is killed at
the end, whatever happened.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.fixtures import presets
from tests.fixtures.cli import write_csv as _write_csv

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="multi-process keras.distribution runs on jax",
)
CLI = os.path.join(os.path.dirname(sys.executable), "keras-adalink")
TIMEOUT = 240  # seconds, for any one command


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A tiny BERT preset and 96 labelled rows: 12 steps an epoch."""
    root = tmp_path_factory.mktemp("multiprocess")
    _write_csv(root / "train.csv", 96, "train")
    flags = [
        "train",
        "--backbone",
        presets.bert(str(root / "bert")),
        "--data",
        str(root / "train.csv"),
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--task",
        "classification",
        "--rank",
        "2",
        "--batch-size",
        "8",
        "--sequence-length",
        "16",
    ]
    return root, flags


def _port():
    """A free port whose next port (the rendezvous) is free too."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        try:
            with socket.socket() as after:
                after.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no two free ports in a row")


def _env(devices):
    flags = os.environ.get("XLA_FLAGS", "")
    return {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "HF_HUB_OFFLINE": "1",
        "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count="
        f"{devices}",
    }


def _start(args, devices, log):
    return subprocess.Popen(
        [CLI, *map(str, args)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_env(devices),
        start_new_session=True,
    )


def _kill(process):
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def _processes(flags, outs, root, port=None, counts=(2, 2)):
    """Starts process i of 2 with `--out outs[i]`; returns them."""
    port = port or _port()
    return [
        _start(
            [
                *flags,
                "--out",
                out,
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                count,
                "--process-id",
                index,
            ],
            4,
            open(root / f"log_{os.path.basename(out)}_{index}", "w"),
        )
        for index, (out, count) in enumerate(zip(outs, counts))
    ]


def _wait(processes, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    try:
        for process in processes:
            process.wait(timeout=max(deadline - time.monotonic(), 1))
        return [p.returncode for p in processes]
    finally:
        for process in processes:
            _kill(process)


def _log(root, name):
    return "\n".join(
        (root / f).read_text()[-2000:]
        for f in sorted(os.listdir(root))
        if f.startswith(f"log_{name}")
    )


def _one_process(flags, out, root):
    with open(root / f"log_{os.path.basename(out)}", "w") as log:
        process = _start([*flags, "--out", out], 8, log)
        assert _wait([process]) == [0], _log(root, os.path.basename(out))


def _same_run(a, b):
    first, second = (
        load_file(os.path.join(out, "adapter.safetensors")) for out in (a, b)
    )
    assert first.keys() == second.keys()
    for name, value in first.items():
        np.testing.assert_allclose(value, second[name], atol=1e-5, err_msg=name)
    metrics = [
        json.load(open(os.path.join(out, "metrics.json"))) for out in (a, b)
    ]
    assert metrics[0]["train_steps"] == metrics[1]["train_steps"]
    for key, values in metrics[0]["history"].items():
        np.testing.assert_allclose(
            values, metrics[1]["history"][key], atol=1e-5, err_msg=key
        )
    for key, value in metrics[0]["train"].items():
        assert value == pytest.approx(metrics[1]["train"][key], abs=1e-5)


@pytest.mark.parametrize(
    "mesh", [["--mesh", "2x4", "--model-parallel"], ["--mesh", "8x1"]]
)
def test_two_processes_train_what_one_process_trains(job, mesh):
    """ModelParallel (frozen weights split over each process's 4 devices)
    and DataParallel: the same adapter, history and final metrics as one
    process with 8 devices; only process 0 writes (each process has its own
    --out, as on machines without a shared disk)."""
    root, flags = job
    name = mesh[1]
    flags = [*flags, *mesh, "--epochs", "2"]
    reference = str(root / f"one_{name}")
    _one_process(flags, reference, root)
    outs = [str(root / f"two_{name}_{i}") for i in range(2)]
    codes = _wait(_processes(flags, outs, root))
    assert codes == [0, 0], _log(root, f"two_{name}")
    _same_run(reference, outs[0])
    assert not os.path.exists(outs[1])  # Process 1 wrote nothing.
    metrics = json.load(open(os.path.join(outs[0], "metrics.json")))
    assert metrics["train_steps"] == 2 * 96 // 8  # Each row once an epoch.


def test_killed_process_resumes_to_the_same_adapter(job):
    """SIGKILL process 1 in the second of three epochs (then process 0, as
    a launcher does): both restarted with --resume end with the adapter of
    a run that never stopped, and no file is ever half written."""
    root, flags = job
    flags = [*flags, "--mesh", "8x1", "--epochs", "3"]
    shared = str(root / "preempted")  # One folder: a shared disk.
    processes = _processes(flags, [shared, shared], root)
    checkpoint = os.path.join(shared, "checkpoint.npz")
    deadline = time.monotonic() + TIMEOUT
    try:
        while not os.path.exists(checkpoint):
            assert time.monotonic() < deadline, _log(root, "preempted")
            assert processes[0].poll() is None, _log(root, "preempted")
            time.sleep(0.05)
        _kill(processes[1])
        _kill(processes[0])
    finally:
        for process in processes:
            _kill(process)
    written = sorted(os.listdir(shared))
    assert "adapter.safetensors" not in written, "ended before the kill"
    assert not [f for f in written if "partial" in f], written
    with np.load(checkpoint) as saved:  # Whole, and from epoch 1 or 2.
        assert json.loads(str(saved["meta"]))["epochs_done"] in (1, 2)
    resumed = _processes([*flags, "--resume"], [shared, shared], root)
    assert _wait(resumed) == [0, 0], _log(root, "preempted")
    uninterrupted = str(root / "uninterrupted")
    _one_process(flags, uninterrupted, root)
    _same_run(uninterrupted, shared)


def test_a_process_that_never_joins_is_an_error_not_a_hang(job):
    root, flags = job
    start = time.monotonic()
    (alone,) = _processes(
        [*flags, "--mesh", "8x1", "--join-timeout", "3"],
        [str(root / "alone")],
        root,
    )
    assert _wait([alone]) == [2]
    log = _log(root, "alone")
    assert "processes [1] of 2 did not join" in log
    assert time.monotonic() - start < 60


def test_wrong_process_count_is_refused(job):
    root, flags = job
    outs = [str(root / "miscounted")] * 2
    codes = _wait(
        _processes(
            [*flags, "--mesh", "8x1", "--join-timeout", "20"],
            outs,
            root,
            counts=(2, 3),
        )
    )
    assert codes == [2, 2]
    log = _log(root, "miscounted")
    assert "process 1 has --num-processes 3, process 0 has 2" in log


@pytest.mark.parametrize(
    "args,message",
    [
        (["--mesh", "4x4"], "needs 16 devices; 8 are visible"),
        (["--mesh", "8x1", "--batch-size", "12"], "not divisible by the mesh"),
        (["--mesh", "2x4"], "add --model-parallel"),
    ],
)
def test_bad_mesh_is_refused(job, args, message):
    root, flags = job
    out = root / "bad_mesh"
    with open(root / "log_bad_mesh", "w") as log:
        process = _start([*flags, *args, "--out", out], 8, log)
        assert _wait([process]) == [2]
    assert message in (root / "log_bad_mesh").read_text()
    assert not out.exists()
