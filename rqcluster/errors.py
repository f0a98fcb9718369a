"""Every error rqcluster raises on purpose: one root, one line of "Raised when …" each.

Each class carries the CLI exit status it maps to, so the command line turns any of
them into one clean message and one status in a single place (``cli.main``).
"""


class RQClusterError(Exception):
    """Raised when rqcluster refuses or fails something; the root of every rqcluster error."""

    exit_code = 2


class ConfigError(RQClusterError):
    """Raised when the cluster config file is missing, malformed or invalid."""


class InputError(RQClusterError):
    """Raised when job parameters, files, shapes, dtypes or functions are unusable."""


class UnknownKindError(InputError):
    """Raised when a job names a kind that no plug-in in ``rqcluster.kinds`` provides."""


class BrokerUnavailable(RQClusterError):
    """Raised when the Redis server named in the config cannot be reached."""


class DecodeError(RQClusterError):
    """Raised when a record read from Redis cannot be decoded (corrupt, foreign or too new)."""


class NotInUnit(RQClusterError):
    """Raised when ``unit_rng()`` / ``unit_seed()`` is called outside a running unit."""


class ProcessorError(RQClusterError):
    """Raised when an external program run for a unit fails the JSON-lines protocol."""


class VersionSkew(RQClusterError):
    """Raised when a shipped function was pickled by other Python/cloudpickle versions."""


class NoLiveSlave(RQClusterError):
    """Raised when a job is submitted from the CLI while no slave of the cluster is live."""


class SlaveWaitTimeout(NoLiveSlave):
    """Raised when no slave became live within the time a submitter agreed to wait."""

    exit_code = 3


class NoSuchJob(RQClusterError):
    """Raised when a job id is not known to the cluster (never submitted, or expired)."""


class JobFailed(RQClusterError):
    """Raised when a job ended failed or cancelled instead of producing a result."""

    exit_code = 1


class JobTimeout(RQClusterError):
    """Raised when waiting for a job's result outlasted the caller's timeout."""

    exit_code = 3
