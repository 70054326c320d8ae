"""Worker processes end with the process that started them.

A worker of a :class:`~concurrent.futures.ProcessPoolExecutor` waits on a queue whose write
end it holds itself, so it never sees its parent go: a party killed with SIGKILL (or a
kernel restarted hard) would leave its PSI and HE workers running for good, with their keys
in memory. :func:`exit_with_parent`, as (or inside) a pool's initializer, ends the worker as
soon as its parent's sentinel closes.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection
import os
import threading

#: the exit code of a worker whose parent went away
ORPHANED = 70


def exit_with_parent() -> None:
    """In a spawned worker: exit (code :data:`ORPHANED`) once the parent process is gone."""
    parent = mp.parent_process()
    if parent is None or parent.sentinel is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(ORPHANED)

    threading.Thread(target=watch, name="fedlab-exit-with-parent", daemon=True).start()
