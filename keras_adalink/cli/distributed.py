"""`train --mesh`, `--model-parallel` and the multi-process flags.

One process (`--mesh 2x4` over the devices it sees) or many, one a host
(`--coordinator HOST:PORT --num-processes N --process-id I`, or Keras'
`KERAS_DISTRIBUTION_JOB_ADDRESSES` / `_NUM_PROCESSES` / `_PROCESS_ID`
environment variables; `--coordinator auto` lets jax read a TPU pod's or a
SLURM job's own). Every process runs the same global computation: the
frozen backbone replicated (`DataParallel`) or split by
`keras_adalink.get_layout_map` (`--model-parallel`), each process feeding
its own rows of every global batch, and only process 0 writes the run
folder.
"""

import dataclasses
import os
import socket
import time

import keras

from keras_adalink.cli.runs import CliError

ENV = "KERAS_DISTRIBUTION_"


def add_arguments(train):
    train.add_argument(
        "--mesh",
        help="BATCHxMODEL device mesh over every process's devices, e.g. "
        "2x4 (jax); the batch is split over BATCH, and with "
        "--model-parallel the frozen weights over MODEL (default: one "
        "device)",
    )
    train.add_argument(
        "--model-parallel",
        action="store_true",
        help="split the frozen backbone over the mesh's MODEL axis "
        "(keras_adalink.get_layout_map); without it each device holds all "
        "of it (DataParallel)",
    )
    train.add_argument(
        "--coordinator",
        help="HOST:PORT of process 0, on every process of a multi-process "
        f"run ('auto': a TPU pod's or SLURM's own; default: ${ENV}"
        "JOB_ADDRESSES)",
    )
    train.add_argument(
        "--num-processes",
        type=int,
        help=f"processes in the run (default: ${ENV}NUM_PROCESSES, or 1)",
    )
    train.add_argument(
        "--process-id",
        type=int,
        help=f"this process's index, 0 to N-1 (default: ${ENV}PROCESS_ID)",
    )
    train.add_argument(
        "--join-timeout",
        type=int,
        default=300,
        help="seconds to wait for every process to join before failing",
    )


@dataclasses.dataclass
class Placement:
    """Where a run's steps run: its distribution and this process's share.

    `distribution` is `None` on one device. `index`/`count` are this
    process's and the number of processes; `data_size` is the number of
    batch shards a global batch is split into.
    """

    distribution: object = None
    index: int = 0
    count: int = 1
    data_size: int = 1

    @property
    def writes(self):
        """Whether this process writes the run folder (process 0 only)."""
        return self.index == 0

    def local(self, start, stop):
        """This process's rows of the global batch `[start, stop)`."""
        share = (stop - start) // self.count
        return start + self.index * share, start + (self.index + 1) * share


def _processes(args):
    coordinator = args.coordinator or os.environ.get(f"{ENV}JOB_ADDRESSES")
    count = args.num_processes or int(os.environ.get(f"{ENV}NUM_PROCESSES", 1))
    index = args.process_id
    if index is None and f"{ENV}PROCESS_ID" in os.environ:
        index = int(os.environ[f"{ENV}PROCESS_ID"])
    if coordinator is None and count == 1:
        return
    if keras.backend.backend() != "jax":
        raise CliError(
            "multi-process training runs on the jax backend; set "
            "KERAS_BACKEND=jax"
        )
    import jax

    if coordinator == "auto":
        jax.distributed.initialize(initialization_timeout=args.join_timeout)
        return
    if coordinator is None or count < 2 or index is None:
        raise CliError(
            "a multi-process run needs --coordinator HOST:PORT, "
            "--num-processes N (2 or more) and --process-id I on every process"
        )
    if not 0 <= index < count:
        raise CliError(
            f"--process-id must be in 0..{count - 1}. Received: {index}"
        )
    _rendezvous(coordinator.split(",")[0], count, index, args.join_timeout)
    # CPU devices talk through gloo (the default has no cross-process
    # collectives); accelerators use their own. Set before jax starts.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator.split(",")[0],
            num_processes=count,
            process_id=index,
            initialization_timeout=args.join_timeout,
        )
    except Exception as error:  # jax raises XlaRuntimeError, among others
        raise CliError(
            f"process {index} of {count} could not join {coordinator} "
            f"(--join-timeout {args.join_timeout} s): {str(error)[:300]}"
        ) from error


def _rendezvous(coordinator, count, index, timeout):
    """Waits for all `count` processes on PORT+1 of the coordinator before
    jax joins them, so a process that never comes or a wrong
    `--num-processes` is a one-line error after `timeout` seconds (jax's
    own join aborts the process with a native log instead)."""
    host, port = coordinator.rsplit(":", 1)
    address, deadline = (host, int(port) + 1), time.monotonic() + timeout
    hello = f"{count} {index}".encode()
    if index == 0:
        with socket.create_server(("", address[1])) as server:
            peers, seen = [], {}
            try:
                while len(peers) < count - 1:
                    server.settimeout(max(deadline - time.monotonic(), 0.01))
                    try:
                        peer, _ = server.accept()
                    except TimeoutError:
                        missing = sorted(set(range(1, count)) - set(seen))
                        raise CliError(
                            f"processes {missing} of {count} did not join "
                            f"{coordinator} within {timeout} s "
                            "(--join-timeout); start every process with the "
                            "same --coordinator and --num-processes"
                        ) from None
                    peer.settimeout(10)
                    their_count, their_index = map(int, peer.recv(32).split())
                    peers.append(peer)
                    seen[their_index] = their_count
                    if their_count != count:
                        raise CliError(
                            f"process {their_index} has --num-processes "
                            f"{their_count}, process 0 has {count}"
                        )
                for peer in peers:
                    peer.sendall(b"go")
            finally:
                for peer in peers:
                    peer.close()
        return
    while True:
        try:
            peer = socket.create_connection(address, timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise CliError(
                    f"process 0 did not answer at {host}:{address[1]} "
                    f"(--coordinator's PORT+1) within {timeout} s "
                    "(--join-timeout)"
                ) from None
            time.sleep(0.2)
    with peer:
        peer.sendall(hello)
        peer.settimeout(max(deadline - time.monotonic(), 1))
        try:
            answer = peer.recv(2)
        except TimeoutError:
            answer = b""
    if answer != b"go":
        raise CliError(
            f"process 0 at {coordinator} did not start the run within "
            f"{timeout} s (see its error: another process missing, or a "
            "different --num-processes)"
        )


def _mesh(args):
    """`(batch, model)` of `--mesh`, checked against the devices."""
    try:
        shape = tuple(int(n) for n in args.mesh.lower().split("x"))
        batch, model = shape if len(shape) == 2 else (shape[0], 1)
    except ValueError:
        raise CliError(
            f"--mesh must be BATCHxMODEL, e.g. 2x4. Received: {args.mesh}"
        ) from None
    devices = keras.distribution.list_devices()
    if batch * model != len(devices):
        raise CliError(
            f"--mesh {args.mesh} needs {batch * model} devices; "
            f"{len(devices)} are visible to the run (on CPU: XLA_FLAGS="
            "--xla_force_host_platform_device_count=N on every process)"
        )
    if model > 1 and not args.model_parallel:
        raise CliError(
            f"--mesh {args.mesh} has a MODEL axis: add --model-parallel, or "
            f"use --mesh {batch * model}x1 to replicate the backbone"
        )
    return batch, model


def _process_count():
    if keras.backend.backend() != "jax":
        return 1
    import jax

    return jax.process_count()


def place(args):
    """Joins the other processes and checks the mesh: a `Placement` (its
    distribution is set by `enter`, once the layout map is known)."""
    multi = args.num_processes or args.coordinator
    if (args.mesh or multi) and keras.backend.backend() != "jax":
        raise CliError(
            "--mesh and the multi-process flags run on the jax backend "
            "(keras.distribution); set KERAS_BACKEND=jax"
        )
    _processes(args)
    if args.mesh is None:
        if args.model_parallel:
            raise CliError("--model-parallel needs --mesh BATCHxMODEL")
        if _process_count() > 1:
            raise CliError("a multi-process run needs --mesh BATCHxMODEL")
        return Placement()
    import jax
    import numpy as np

    batch, model = _mesh(args)
    placement = Placement(
        index=jax.process_index(), count=jax.process_count(), data_size=batch
    )
    # Process p must hold the p-th block of every global batch: each batch
    # shard (a row of the mesh) on one process, in process order.
    owners = np.array([d.process_index for d in jax.devices()])
    owners = owners.reshape(batch, model)
    if (owners != owners[:, :1]).any() or batch % placement.count:
        raise CliError(
            f"--mesh {args.mesh}: each batch shard (a row of the mesh) must "
            "lie on one process; use a BATCH axis that the number of "
            f"processes ({placement.count}) divides"
        )
    if args.batch_size % batch:
        raise CliError(
            f"--batch-size {args.batch_size} is not divisible by the mesh's "
            f"batch axis ({batch})"
        )
    placement.distribution = (batch, model)
    return placement


def enter(placement, args, build):
    """Sets the run's distribution; `build()` is called once first, for
    `--model-parallel`, so the layout map can be read off its shapes."""
    if placement.distribution is None:
        return
    devices = keras.distribution.list_devices()
    batch, model = placement.distribution
    if args.model_parallel:
        import keras_adalink

        mesh = keras.distribution.DeviceMesh(
            (batch, model), ["batch", "model"], devices
        )
        with keras.device("cpu:0"):  # The first build stays on the host.
            layout_map = keras_adalink.get_layout_map(build(), mesh)
        distribution = keras.distribution.ModelParallel(
            layout_map=layout_map, batch_dim_name="batch"
        )
    else:
        distribution = keras.distribution.DataParallel(devices=devices)
    # Each process feeds its own rows of every global batch (fitting.py).
    distribution.auto_shard_dataset = False
    placement.distribution = distribution
    keras.distribution.set_distribution(distribution)
