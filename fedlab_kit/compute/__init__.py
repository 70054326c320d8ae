"""Where a party's heavy work runs: this machine's processes (the default), any
:class:`concurrent.futures.Executor`, or the party's own Dask cluster.

Each party chooses for itself (``Party(..., cluster="local:4")``); the relay stays the only
link between organisations, and nothing of a party's cluster is visible to its peers.
"""

from .workers import ClusterError, ExecutorWorkers, ProcessWorkers, Workers, open_workers

__all__ = ["ClusterError", "ExecutorWorkers", "ProcessWorkers", "Workers", "open_workers"]
