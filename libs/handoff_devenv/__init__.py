"""Local infrastructure for development and tests on a machine without Docker.

Runs the real Apache Kafka broker from its Maven jars and a throwaway PostgreSQL 15
cluster from Debian's package: the same servers production runs, as processes.
"""

from handoff_devenv.kafka import KafkaCluster
from handoff_devenv.ports import PortInUse
from handoff_devenv.postgres import PostgresCluster

__all__ = ["KafkaCluster", "PortInUse", "PostgresCluster"]
