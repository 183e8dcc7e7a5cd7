"""Which Ray cluster `--address` names, and whether anything answers there, before ray.init.

ray.init(address=...) with nothing running raises a ConnectionError with a traceback, and with an
address that does not answer it retries for ever, printing C++ log lines. caviar looks the address
up the way ray.init does (ray._private.services.get_ray_address_from_environment: RAY_ADDRESS, then
the last `ray start`), then opens a TCP connection to it with a timeout. Upstream: none filed.
Canary: test_ray_compat checks the private lookup is still there.
"""

from __future__ import annotations

import socket

from caviar.ops.ray_env import RayEnv
from model.errors import UserError

PROBE_TIMEOUT_S = 5.0
HOW_TO_START = "start one with cluster/local.sh up, or check the address"


def cluster_address(address: str, label: str | None = None) -> str:
    """host:port of the cluster `address` names ("auto": the one running here)."""
    label = label or f"--address {address}"
    if address.startswith("ray://"):
        return address.removeprefix("ray://").rstrip("/")
    try:
        from ray._private.services import get_ray_address_from_environment

        found = get_ray_address_from_environment(address, None)
    except ConnectionError:
        found = None
    if not found or found == "auto":
        raise UserError(f"{label}: no Ray cluster is running on this machine; {HOW_TO_START}")
    return found.split("://")[-1].rstrip("/")


def check_reachable(address: str, label: str | None = None) -> None:
    """One line and exit 2 within seconds when no cluster answers at `address` (`label`: where the
    user gave it, by default --address)."""
    label = label or f"--address {address}"
    if "://" not in address and address != "auto" and not address.rpartition(":")[2].isdigit():
        raise UserError(f"{label}: expected host:port, ray://host:port or auto")
    target = cluster_address(address, label)
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"{label}: expected host:port, ray://host:port or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as err:
        reason = "timed out" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise UserError(f"{label}: no Ray cluster answers at {target} ({reason}); {HOW_TO_START}") from None


def check_cluster(address: str | None) -> None:
    """The cluster --address names, or else the one RAY_ADDRESS names (ray.init joins it too: a
    malformed one was a ValueError traceback)."""
    if address:
        check_reachable(address)
    elif (named := RayEnv.from_env().address) and named not in ("auto", "local"):
        check_reachable(named, f"RAY_ADDRESS={named}")
