"""Settings module for a slave's `rq worker` (``rq worker -c workers.settings``).

Reads the cluster config named by $RQCLUSTER_CONFIG (default config/local.json) and the
slave name from $RQCLUSTER_NODE (default: the node matching this host; with
options.allow-join, a name not in the config is a slave that joined), and gives RQ the
Redis URL and this slave's queue. The URL carries the password only in memory.
A bad config, a name that is not a slave, or a worker class other than rqcluster's
(RQ's default worker would unpickle whatever is pushed onto the queue) stops the worker
with one line, exit 2.
"""

import os
import sys

from rqcluster import keys, membership
from rqcluster.config import load_config
from rqcluster.connection import worker_url
from rqcluster.errors import RQClusterError
from rqcluster.signedrq import require_slave_worker

try:
    require_slave_worker(sys.argv, os.environ)
    CONFIG = load_config(os.environ.get("RQCLUSTER_CONFIG"))
    SLAVE = membership.worker_slave(CONFIG, os.environ.get("RQCLUSTER_NODE"))
    REDIS_URL = worker_url(CONFIG.redis)
except RQClusterError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(e.exit_code)

QUEUES = [keys.slave_queue(SLAVE)]
