"""rqcluster: a Redis-brokered compute cluster for numpy-sized work, built on RQ."""

from rqcluster.api import Cluster, JobHandle, Task
from rqcluster.errors import (
    ConfigError,
    InputError,
    JobFailed,
    JobTimeout,
    NoSuchJob,
    RQClusterError,
)
from rqcluster.graph import Graph
from rqcluster.scheduler import Scheduler

__version__ = "0.1.0"

__all__ = ["Cluster", "ConfigError", "Graph", "InputError", "JobFailed", "JobHandle",
           "JobTimeout", "NoSuchJob", "RQClusterError", "Scheduler", "Task", "__version__"]
