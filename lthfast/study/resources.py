"""What a study asks of the machine, checked before its first job, and the connection to a
Ray cluster, given up in seconds when nobody answers.

`check_local(config, execution)` (the `study` command calls it before it plans, dry runs
included) compares each request with what there is, and fails with one line that names what
was asked, what there is and the largest value that fits:
  --batch-size   one training (weights, gradients, momentum, mask, activations at that batch
                 size: lthfast.training.auto.training_bytes, as for --stack's default) beside
                 the data and, on the CPU, the interpreter, against the device's free memory;
  --stack        that many trainings together, the same way;
  --workers      on a GPU machine at most one a GPU; on the CPU each worker's footprint (the
                 interpreter with torch, measured as this process's resident memory, its data,
                 its stack) times the workers against the free memory.
More CPU workers than cores is one warning, and the study proceeds: a worker then runs one
thread, the workers time-share the cores (no faster, no slower in total than as many workers
as cores), the numbers stored are the same (one thread a worker, as with fewer workers), and
memory is checked above; it lets a small machine (a 1-core CI runner) run what a larger one
runs, e.g. tests/test_executors.py's two workers.

`connect_ray(execution)` connects to the cluster at --address: first a TCP connection to its
port (`--connect-timeout`, a refused one fails at once), then ray.init in a thread given up
after the same time; unless --verbose, what Ray writes meanwhile goes to a log file, not the
terminal. Then --cpus-per-job and --gpus-per-job are checked against the cluster's nodes (a
task runs on one node). Tests: tests/test_resources.py.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

from lthfast.data import registry as data_sets
from lthfast.data.dataset import table_bytes
from lthfast.foundations import hardware
from lthfast.foundations.errors import LthError
from lthfast.training.auto import training_bytes

IMAGE_BYTES = 3 * 32 * 32 + 8  # a stored uint8 image and its int64 label


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


# ----------------------------------------------------------------------------- footprints

def interpreter_bytes() -> int:
    """This process's resident memory (measured): what a spawned worker holds once it has
    imported torch and lthfast, before its data and trainings."""
    return hardware.resident_memory()


def data_bytes(train) -> int:
    """The data set a worker holds: its training images (or --train-subset) and test images, and
    the padded training images batches are gathered from (lthfast.data.dataset.gather_table)."""
    sizes = data_sets.get(train.data, train.data_dir).sizes or (50_000, 10_000)
    train_images = min(train.train_subset or sizes[0], sizes[0])
    return (train_images + sizes[1]) * IMAGE_BYTES + table_bytes(train_images)  # + the batches' gather table


# ----------------------------------------------------------------------------- local checks

def check_local(config, execution) -> None:
    """LthError (one line) for a --batch-size, --stack or --workers this machine cannot hold;
    one warning for more CPU workers than cores. Before any job, dry runs included."""
    train = config.imp_config(config.seeds[0], config.rewind_iter).train
    device, process, one = check_memory(train, execution.stack)
    if execution.executor == "local" and execution.workers > 1:
        check_workers(execution, device, process, one)


def check_memory(train, stack: int | None = None) -> tuple[torch.device, int, int]:
    """LthError (one line) for a --batch-size, or a --stack of trainings, that the device's free
    memory cannot hold (the study, `train` and `imp` commands); returns (device, bytes a process
    holds besides its trainings, bytes of one training)."""
    device = hardware.resolve_device(train.device)
    fixed, per_example = training_bytes(train)
    one = fixed + per_example * train.batch_size
    process = interpreter_bytes() + data_bytes(train)
    beside = process if device.type == "cpu" else data_bytes(train)  # what a process holds on the device besides trainings
    free = hardware.free_memory(device)
    where = f"{device.type} memory"
    if beside + one > free:
        fits = max(0, (free - beside - fixed) // per_example)
        raise LthError(f"--batch-size {train.batch_size}: one training of {train.model} needs about {gib(one)} at "
                       f"that batch size (and {gib(beside)} besides), more than the {gib(free)} of free {where}; "
                       f"the largest batch size that fits is {fits}" + ("" if fits else " (none: use a smaller model)"))
    if stack is not None and beside + stack * one > free:
        raise LthError(f"--stack {stack}: {stack} trainings of {train.model} together need about "
                       f"{gib(stack * one)} (and {gib(beside)} besides), more than the {gib(free)} of free "
                       f"{where}; the largest stack that fits is {max(1, (free - beside) // one)}")
    return device, process, one


def check_workers(execution, device: torch.device, process: int, one: int) -> None:
    """--workers against the GPUs (one worker a GPU), or against the CPU's free memory
    (LthError) and cores (a warning: see the module's docstring for why it proceeds)."""
    workers, gpus = execution.workers, torch.cuda.device_count()
    if gpus and workers > gpus:  # lthfast.study.executors.LocalPool: one worker a GPU wherever there are GPUs
        raise LthError(f"--workers {workers} is more than this machine's {gpus} GPUs (one worker a GPU); "
                       f"the most that fits is {gpus}")
    # On the host: the interpreter and the data, and on the CPU the worker's stack (a default stack
    # shares the memory among the workers, lthfast.study.executors.stack_size: it counts 1 here).
    each = process + ((execution.stack or 1) * one if device.type == "cpu" else 0)
    free = hardware.free_memory(torch.device("cpu"))
    if workers * each > free:
        raise LthError(f"--workers {workers}: each worker needs about {gib(each)} (torch, the data"
                       f"{', its stack of trainings' if device.type == 'cpu' else ''}), {gib(workers * each)} in "
                       f"all, more than this machine's {gib(free)} of free memory; the most that fits is "
                       f"{free // each}")
    cores = hardware.cpu_cores()
    if not gpus and workers > cores:
        warnings.warn(f"--workers {workers} is more than this machine's {cores} CPU cores: the workers run one "
                      f"thread each and share the cores, no faster than --workers {cores} (same results)",
                      stacklevel=2)


# ----------------------------------------------------------------------------- a Ray cluster

def host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of HOST:PORT or ray://HOST:PORT (Ray Client's default port 10001); None
    for auto, or an address without a port."""
    rest = address.split("://", 1)[1] if "://" in address else address
    host, _, port = rest.rpartition(":")
    if not host:
        return (rest.strip("[]"), 10001) if address.startswith("ray://") and rest else None
    if not port.isdigit():
        raise LthError(f"--address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    return host.strip("[]"), int(port)


def reachable(address: str, timeout: float) -> None:
    """LthError (one line: the address, the time waited, the likely cause) unless something
    accepts a TCP connection at the address within `timeout` seconds. Ray reads 127.0.0.1 as
    this node's address, so a local name is tried as typed and as this node's address."""
    target = host_port(address)
    if target is None:
        return
    host, port = target
    hosts = [host]
    if host in ("localhost", "127.0.0.1", "::1"):
        with contextlib.suppress(Exception):
            from ray._private.services import resolve_ip_for_localhost
            hosts.append(resolve_ip_for_localhost(host))
    start, error = time.monotonic(), None
    for name in dict.fromkeys(hosts):
        try:
            socket.create_connection((name, port), timeout=timeout).close()
            return
        except OSError as exc:
            error = error or exc
    waited = time.monotonic() - start
    if isinstance(error, ConnectionRefusedError):
        event, cause = "refused the connection", (f"nothing listens on port {port} there; start the cluster "
                                                  "(`ray start --head`) or give its GCS port (6379 unless changed)")
    elif isinstance(error, socket.gaierror):
        event, cause = "could not be found", f"its host name is unknown ({error.strerror}): a typo, or no DNS"
    elif isinstance(error, TimeoutError):
        event, cause = "did not answer", "a wrong host, a firewall, or the cluster is down (or raise --connect-timeout)"
    else:
        event, cause = "could not be reached", f"{error.strerror or error}; check the network"
    raise LthError(f"the Ray cluster at {address} {event} after {waited:.1f} s: {cause}")


def connect_ray(execution):
    """The ray module, connected to the cluster at --address (a new local one if none; an
    existing connection is kept), its nodes checked against --cpus-per-job and --gpus-per-job.
    A cluster that does not answer within --connect-timeout is one LthError."""
    try:
        import ray  # optional: pip install -e '.[ray]'
    except ImportError:
        raise LthError("--executor ray needs Ray: pip install -e '.[ray]' (or pip install 'ray[default]')") from None
    address = execution.address or os.environ.get("RAY_ADDRESS") or None  # ray.init reads RAY_ADDRESS too
    if not ray.is_initialized():
        if address not in (None, "auto", "local"):
            reachable(address, execution.connect_timeout)
        verbose = execution.verbose
        env = {k: v for k, v in os.environ.items() if k.startswith("LTHFAST_")}
        start = lambda: ray.init(address=address, ignore_reinit_error=True, log_to_driver=verbose,  # noqa: E731
                                 logging_level=logging.INFO if verbose else logging.ERROR,
                                 runtime_env={"env_vars": env})
        limit = execution.connect_timeout if address not in (None, "local") else None  # a new cluster: no connection
        quiet_call(start, limit, verbose, f"the Ray cluster at {address}")
    check_ray(execution, ray_nodes(ray))
    return ray


def ray_nodes(ray) -> list[dict]:
    """The resources of every live node of the cluster."""
    return [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive", True)]


def check_ray(execution, nodes: list[dict]) -> None:
    """LthError if no node of the cluster has --cpus-per-job CPUs, or --gpus-per-job of
    --gpu-resource (a task runs on one node: it would wait forever)."""
    asked = [("--cpus-per-job", execution.cpus_per_job, "CPU")]
    if execution.gpus_per_job:
        asked.append(("--gpus-per-job", execution.gpus_per_job, execution.gpu_resource))
    where = f"the Ray cluster at {execution.address}" if execution.address else "the local Ray cluster"
    count = f"{len(nodes)} node{'' if len(nodes) == 1 else 's'}"
    for flag, value, resource in asked:
        most = max((n.get(resource, 0) for n in nodes), default=0)
        if value > most:
            raise LthError(f"{flag} {value:g} is more {resource} than any node of {where} has ({count}, "
                           f"{sum(n.get(resource, 0) for n in nodes):g} {resource} in all); the most that fits is "
                           f"{most:g}" + (f" (no node has a {resource!r} resource: check --gpu-resource)"
                                          if not most and resource != "CPU" else ""))
    if not any(all(n.get(resource, 0) >= value for _, value, resource in asked) for n in nodes):
        raise LthError(f"no node of {where} has both {execution.cpus_per_job:g} CPU and {execution.gpus_per_job:g} "
                       f"{execution.gpu_resource}; lower --cpus-per-job or --gpus-per-job")


def last_log_line(log: str, most: int = 200) -> str:
    """The message of the last line Ray's core wrote to `log` (its time and source left out)."""
    try:
        lines = [line for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    text = lines[-1].split("] ", 1)[-1] if lines else ""
    return text if len(text) <= most else text[:most - 3] + "..."


def quiet_call(fn, timeout: float | None, verbose: bool, what: str):
    """fn() in a thread, given up after `timeout` seconds with one LthError that names `what`
    and the time waited (None: in this thread, waited for: a new local Ray cluster's processes
    are killed when the thread that started them ends). Unless verbose, what the C level
    writes to the terminal's stderr meanwhile (Ray's core logs its retries there) goes to a
    log file."""
    outcome = {}

    def run():
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc
    log, saved = None, None
    if not verbose:
        sys.stderr.flush()
        fd, log = tempfile.mkstemp(prefix="lthfast-ray-", suffix=".log")
        saved = os.dup(2)
        os.dup2(fd, 2)
        os.close(fd)
    start = time.monotonic()
    thread = threading.Thread(target=run, daemon=True, name="connect")
    if timeout is None:
        run()
    else:
        thread.start()
        thread.join(timeout)
    if thread.is_alive():
        if saved is not None:  # Ray's thread goes on writing to the log; this process's lines reach the terminal
            sys.stderr = open(saved, "w", buffering=1)
        said = last_log_line(log) if log else ""
        raise LthError(f"{what} accepted the connection but did not answer within {time.monotonic() - start:.0f} s "
                       "(its port is not a Ray head's GCS port, the cluster refuses this process, or it is starting "
                       f"or overloaded; raise --connect-timeout, or see {log or 'the lines above'}"
                       + (f"; Ray's last log line: {said}" if said else "") + ")")
    if saved is not None:
        os.dup2(saved, 2)
        os.close(saved)
        Path(log).unlink(missing_ok=True)
    if "error" in outcome:
        exc = outcome["error"]
        if isinstance(exc, LthError):
            raise exc
        first = (str(exc).strip().splitlines() or [""])[0]
        raise LthError(f"could not connect to {what}: {type(exc).__name__}: {first}") from None
    return outcome.get("value")
