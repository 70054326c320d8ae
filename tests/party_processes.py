"""Party processes over a relay process on loopback, for the end-to-end tests."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fedlab_kit.demo.harness import RelayProcess, create_room

CTX = mp.get_context("spawn")
#: one party's process from (name, key file, invitation text, result queue): (target, args)
Launch = Callable[[str, str, str, Any], tuple[Callable[..., Any], tuple[Any, ...]]]


@contextmanager
def party_processes(tmp_path: Path, names: Sequence[str], launch: Launch
                    ) -> Iterator[tuple[RelayProcess, Any, list[Any]]]:
    """A relay process, a room for ``names`` and one started (spawned) process per party;
    yields (relay, queue, processes) and joins the processes (killing stragglers) on exit."""
    with RelayProcess.start() as relay:
        inv, keys = create_room(list(names), tmp_path, relay.host, relay.port)
        q = CTX.Queue()
        procs = []
        for name in names:
            target, args = launch(name, str(keys[name]), inv.to_string(), q)
            procs.append(CTX.Process(target=target, args=args))
        for p in procs:
            p.start()
        try:
            yield relay, q, procs
        finally:
            for p in procs:
                p.join(60)
                if p.is_alive():
                    p.kill()


def run_parties(tmp_path: Path, names: Sequence[str], launch: Launch, *,
                timeout: float = 300, clean_exit: bool = True) -> list[Any]:
    """Run every party to its end (each puts one item on the queue) and return the items;
    with ``clean_exit`` every process must also exit with code 0."""
    with party_processes(tmp_path, names, launch) as (_, q, procs):
        items = [q.get(timeout=timeout) for _ in procs]
        for p in procs:
            p.join(60)
    if clean_exit:
        assert [p.exitcode for p in procs] == [0] * len(procs)
    return items
