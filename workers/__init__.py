"""What a slave machine runs: `rq worker -c workers.settings -w workers.slave.SlaveWorker`."""
