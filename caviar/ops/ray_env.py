"""Ray's own environment variables, as caviar's cluster commands read them (model/ stays free of
Ray; model/settings.py reads every other variable). Read afresh at each call."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RayEnv:
    address: str | None  # RAY_ADDRESS
    dashboard: str | None  # RAY_DASHBOARD_ADDRESS
    auth_token: str | None  # RAY_AUTH_TOKEN
    auth_token_path: Path  # RAY_AUTH_TOKEN_PATH (default ~/.ray/auth_token)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RayEnv:
        env = os.environ if environ is None else environ
        return cls(
            address=env.get("RAY_ADDRESS") or None,
            dashboard=env.get("RAY_DASHBOARD_ADDRESS") or None,
            auth_token=(env.get("RAY_AUTH_TOKEN") or "").strip() or None,
            auth_token_path=Path(env.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")).expanduser(),
        )
