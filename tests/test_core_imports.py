"""The protocol core and every protocol import nothing of the transport (as h11 does)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROTOCOLS = ["fedlab_kit.protocol", "fedlab_kit.psi.protocol", "fedlab_kit.psi.plan",
             "fedlab_kit.boost.active", "fedlab_kit.boost.passive",
             "fedlab_kit.analytics.encrypted_counts"]
TRANSPORT = ("fedlab_kit.net", "fedlab_kit.psi.api", "fedlab_kit.boost.estimator",
             "fedlab_kit.widgets", "fedlab_kit.demo", "websockets")


@pytest.mark.parametrize("module", PROTOCOLS)
def test_a_protocol_module_loads_no_transport(module: str) -> None:
    code = (f"import importlib, json, sys; importlib.import_module({module!r}); "
            "print(json.dumps(sorted(sys.modules)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True,
                                       capture_output=True, text=True).stdout)
    assert module in loaded
    assert [m for m in loaded if m.startswith(TRANSPORT)] == []


def test_the_check_sees_transport_when_it_is_there() -> None:
    """The same probe on the driver finds the relay client and the sealing (no false pass)."""
    code = ("import json, sys; import fedlab_kit.net.driver; "
            "print(json.dumps(sorted(sys.modules)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], check=True,
                                       capture_output=True, text=True).stdout)
    assert {"fedlab_kit.net.relay.client", "fedlab_kit.net.sealing"} <= set(loaded)
