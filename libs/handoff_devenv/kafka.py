"""Apache Kafka 4.x in KRaft mode, run from the jars Maven resolves for `deploy/kafka/pom.xml`.

One node is a combined broker and controller; three nodes form a quorum of
combined nodes on loopback with replication factor 3 and min.insync.replicas 2,
for fault tests. Every node's settings are written out in full, so what runs
here is what a reader can see in its `server.properties`.
"""

import asyncio
import base64
import os
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from handoff_devenv.ports import accepts_connections, ensure_free, free_ports
from handoff_devenv.processes import is_running, spawn, terminate

REPO_ROOT = Path(__file__).resolve().parents[2]
POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
KAFKA_VERSION = "4.1.1"
CACHE_ROOT = Path(os.environ.get("HANDOFF_CACHE", Path.home() / ".cache" / "handoff"))
# A 2-core machine: the stock 1 GiB heap is more than a test broker needs.
BROKER_HEAP = ["-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"]
JVM_OPTIONS_VARIABLE = "HANDOFF_KAFKA_JVM_OPTIONS"
"""Extra JVM options for every broker and storage format this module starts, space-separated.
The tests set `-XX:TieredStopAtLevel=1`: a broker that lives for one test module spends most
of its CPU compiling with C2, which that flag skips (start-up CPU about halved, measured for
issue 18); the benchmarks and `make run` keep the JVM's default, which serves load faster."""

# How soon a dead broker's partitions get a new leader (decision 0012). A broker SIGKILLed
# stops heartbeating to the controller; until the controller fences it, after
# `broker.session.timeout.ms`, its partitions keep it as their leader and every client
# waits. Kafka's defaults (9 s session, 2 s heartbeat) paused pages for 9.4 s; these
# bound the pause at about 3 s, while leaving a heartbeat six chances to arrive on a
# busy 2-core machine before a live broker is fenced.
FAILURE_DETECTION: dict[str, int] = {
    "broker.session.timeout.ms": 3000,
    "broker.heartbeat.interval.ms": 500,
}
KAFKA_DEFAULT_FAILURE_DETECTION: dict[str, int] = {
    "broker.session.timeout.ms": 9000,
    "broker.heartbeat.interval.ms": 2000,
}

LOG4J2 = """\
status = error
appender.console.type = Console
appender.console.name = STDERR
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.console.ref = STDERR
logger.started.name = kafka.server.KafkaRaftServer
logger.started.level = INFO
"""

SCRAM_MECHANISM = "SCRAM-SHA-512"
BROKER_USER = "handoff-broker"  # the brokers' own login to each other on a SCRAM listener


def kafka_classpath() -> str:
    """The broker's jars, resolved once from Maven Central into the cache."""
    libs = CACHE_ROOT / f"kafka-{KAFKA_VERSION}" / "libs"
    marker = libs / ".complete"
    if not marker.exists():
        if shutil.which("mvn") is None:
            raise RuntimeError(
                "Maven (mvn) is needed once to fetch the Kafka jars: apt-get install maven"
            )
        libs.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={libs}",
            ],
            check=True,
        )
        marker.touch()
    return f"{libs}/*"


def new_cluster_id() -> str:
    """Kafka's cluster id format: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's own generator, never one starting with "-", which reads as an option.
    """
    while (cluster_id := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))[
        0
    ] == "-":
        pass
    return cluster_id


@dataclass(frozen=True)
class KafkaNode:
    node_id: int
    port: int
    controller_port: int
    directory: Path

    @property
    def properties_file(self) -> Path:
        return self.directory / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.directory / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.directory / "broker.pid"


class KafkaCluster:
    def __init__(
        self,
        directory: Path,
        ports: list[int] | None = None,
        brokers: int = 1,
        controller_ports: list[int] | None = None,
        properties: Mapping[str, str | int] | None = None,
        scram_users: Mapping[str, str] | None = None,
        advertised_ports: Mapping[int, int] | None = None,
    ) -> None:
        """`properties` override the nodes' `server.properties` (e.g. a benchmark's
        KAFKA_DEFAULT_FAILURE_DETECTION); the ports default to free ones. With
        `scram_users` (name → password) the client listener is SASL_PLAINTEXT and takes
        only those users, by SCRAM-SHA-512, as a production listener would.
        `advertised_ports` (node id → port) makes a node advertise another local port than
        it listens on, e.g. a TCP proxy's in front of it: clients and the other brokers
        then reach it through that port only, after their first metadata answer."""
        if brokers not in (1, 3):
            raise ValueError("a dev cluster has 1 broker, or 3 for fault tests")
        self.directory = directory
        self.properties = dict(properties or {})
        self.scram_users = dict(scram_users or {})
        self.advertised_ports = dict(advertised_ports or {})
        if self.scram_users:
            self.scram_users[BROKER_USER] = secrets.token_hex(16)
        broker_ports = ports or free_ports(brokers)
        controller_ports = controller_ports or free_ports(brokers)
        if len(broker_ports) != brokers or len(controller_ports) != brokers:
            raise ValueError(f"{brokers} brokers need {brokers} ports, got {broker_ports}")
        self.nodes = [
            KafkaNode(
                node_id=index + 1,
                port=broker_ports[index],
                controller_port=controller_ports[index],
                directory=directory / f"node-{index + 1}",
            )
            for index in range(brokers)
        ]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def controller_ports(self) -> list[int]:
        return [node.controller_port for node in self.nodes]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    @property
    def listener(self) -> str:
        """The client listener's security protocol (and its name in server.properties)."""
        return "SASL_PLAINTEXT" if self.scram_users else "PLAINTEXT"

    def client_options(self, user: str = BROKER_USER) -> dict[str, Any]:
        """aiokafka's arguments to log in as `user` (nothing on a plaintext cluster)."""
        if not self.scram_users:
            return {}
        return {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": SCRAM_MECHANISM,
            "sasl_plain_username": user,
            "sasl_plain_password": self.scram_users[user],
        }

    def start(self, timeout: float = 60.0, fresh: bool = True) -> None:
        """Start the nodes; `fresh=False` restarts on the storage of the previous start."""
        for node in self.nodes:
            ensure_free(node.port, f"Kafka broker {node.node_id}")
            ensure_free(node.controller_port, f"Kafka controller {node.node_id}")
        jvm = self._jvm()
        if fresh or not (self.directory / "log4j2.properties").exists():
            self._format(jvm)
        for node in self.nodes:
            self._spawn(node, jvm)
        self._wait_ready(timeout)

    def _jvm(self) -> list[str]:
        log4j = self.directory / "log4j2.properties"
        extra = os.environ.get(JVM_OPTIONS_VARIABLE, "").split()
        return ["java", *extra, f"-Dlog4j2.configurationFile={log4j}", "-cp", kafka_classpath()]

    def _spawn(self, node: KafkaNode, jvm: list[str]) -> None:
        pid = spawn([*jvm, *BROKER_HEAP, "kafka.Kafka", str(node.properties_file)], node.log_file)
        node.pid_file.write_text(str(pid))

    def node(self, node_id: int) -> KafkaNode:
        """The node numbered `node_id` (1-based, as in `node.id`); KeyError if none."""
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)

    def signal_node(self, node_id: int, signum: int) -> None:
        """Send `signum` to one broker: SIGKILL (a crash; `restart_node` brings it back on
        its storage), SIGSTOP and SIGCONT (a hung broker and its return)."""
        pid = self._pid(self.node(node_id))
        if pid is None:
            raise RuntimeError(f"Kafka node {node_id} is not running")
        os.kill(pid, signum)

    def restart_node(self, node_id: int, timeout: float = 60.0) -> None:
        """Start one broker again on its own storage (after a SIGKILL) and return once every
        node of the cluster is registered with the controller again. TimeoutError if not in
        `timeout` seconds; RuntimeError if it exits."""
        node = self.node(node_id)
        if (pid := self._pid(node)) is not None and is_running(pid):
            raise RuntimeError(f"Kafka node {node_id} still runs (pid {pid})")
        ensure_free(node.port, f"Kafka broker {node_id}")
        self._spawn(node, self._jvm())
        self._wait_ready(timeout)

    def resume(self, timeout: float = 60.0) -> list[int]:
        """Start again, each on its own storage, the nodes that do not run (killed, crashed),
        and return their ids once every node is registered with the controller; [] if all
        run. PortInUse if another process took a stopped node's port; TimeoutError if the
        cluster is not whole in `timeout` seconds."""
        stopped = [
            node for node in self.nodes if (pid := self._pid(node)) is None or not is_running(pid)
        ]
        if not stopped:
            return []
        for node in stopped:
            ensure_free(node.port, f"Kafka broker {node.node_id}")
            ensure_free(node.controller_port, f"Kafka controller {node.node_id}")
        jvm = self._jvm()
        for node in stopped:
            self._spawn(node, jvm)
        self._wait_ready(timeout)
        return [node.node_id for node in stopped]

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Return once every node runs and is registered with the controller (a paused one
        back after SIGCONT, say). TimeoutError if not in `timeout` seconds."""
        self._wait_ready(timeout)

    def _format(self, jvm: list[str]) -> None:
        if self.directory.exists():
            shutil.rmtree(self.directory)  # a new cluster id each run: old storage would refuse it
        self.directory.mkdir(parents=True)
        (self.directory / "log4j2.properties").write_text(LOG4J2)
        cluster_id = new_cluster_id()
        formatting = []
        for node in self.nodes:
            node.directory.mkdir(parents=True)
            node.properties_file.write_text(self._properties(node))
            formatting.append(
                subprocess.Popen(
                    [
                        *jvm,
                        "-Xmx256m",
                        "kafka.tools.StorageTool",
                        "format",
                        f"--cluster-id={cluster_id}",
                        "-c",
                        str(node.properties_file),
                        "-g",
                        *(
                            f"--add-scram={SCRAM_MECHANISM}=[name={name},password={password}]"
                            for name, password in self.scram_users.items()
                        ),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
        for process in formatting:
            _, stderr = process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"formatting Kafka storage failed: {stderr.decode()[-2000:]}")

    def stop(self) -> None:
        terminate(self.pids())
        for node in self.nodes:
            node.pid_file.unlink(missing_ok=True)

    def running(self) -> bool:
        return all((pid := self._pid(node)) is not None and is_running(pid) for node in self.nodes)

    def pids(self) -> list[int]:
        """The brokers' process ids, e.g. to watch their memory."""
        return [pid for node in self.nodes if (pid := self._pid(node)) is not None]

    def _pid(self, node: KafkaNode) -> int | None:
        if not node.pid_file.exists():
            return None
        return int(node.pid_file.read_text())

    def advertised_port(self, node: KafkaNode) -> int:
        """The port `node` tells clients and the other brokers to reach it on."""
        return self.advertised_ports.get(node.node_id, node.port)

    def _sasl_properties(self) -> dict[str, str]:
        if not self.scram_users:
            return {}
        login = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{BROKER_USER}" password="{self.scram_users[BROKER_USER]}";'
        )
        return {
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
            f"listener.name.sasl_plaintext.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": login,
        }

    def _properties(self, node: KafkaNode) -> str:
        listener = self.listener
        replication = len(self.nodes)
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        settings = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"{listener}://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"{listener}://127.0.0.1:{self.advertised_port(node)}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": listener,
            "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,{listener}:{listener}",
            **self._sasl_properties(),
            "log.dirs": node.directory / "data",
            "num.partitions": 6,
            "default.replication.factor": replication,
            "min.insync.replicas": min(2, replication),
            "offsets.topic.replication.factor": replication,
            "transaction.state.log.replication.factor": replication,
            "transaction.state.log.min.isr": min(2, replication),
            "share.coordinator.state.topic.replication.factor": replication,
            "share.coordinator.state.topic.min.isr": min(2, replication),
            "group.initial.rebalance.delay.ms": 0,
            "auto.create.topics.enable": "true",
            **FAILURE_DETECTION,
            **self.properties,
        }
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            dead = [n for n in self.nodes if (pid := self._pid(n)) is None or not is_running(pid)]
            if dead:
                log_tail = dead[0].log_file.read_text()[-3000:]
                raise RuntimeError(
                    f"Kafka node {dead[0].node_id} exited during startup:\n{log_tail}"
                )
            if not all(accepts_connections(node.port) for node in self.nodes):
                time.sleep(0.2)
                continue
            try:
                if asyncio.run(self._brokers_registered()) == len(self.nodes):
                    return
            except Exception as error:  # not up yet: the admin client cannot connect
                last_error = error
            time.sleep(0.2)
        raise TimeoutError(f"Kafka not ready after {timeout:.0f} s (last error: {last_error})")

    async def _brokers_registered(self) -> int:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            request_timeout_ms=2000,
            **self.client_options(),
        )
        await admin.start()
        try:
            cluster = await admin.describe_cluster()
            return len(cluster["brokers"])
        finally:
            await admin.close()
