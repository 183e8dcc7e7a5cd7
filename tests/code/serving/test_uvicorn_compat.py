"""Canary for caviar/serving/uvicorn_compat.py: the request-head deadline subclasses uvicorn's
private H11Protocol; this fails once the hooks it overrides change shape."""

from __future__ import annotations

import inspect

from caviar.serving.uvicorn_compat import HOOKS, TimedH11Protocol


def test_the_hooks_the_deadline_overrides_are_still_uvicorns():
    from uvicorn.protocols.http.h11_impl import H11Protocol

    for hook in HOOKS:
        assert hook in vars(H11Protocol), f"uvicorn's H11Protocol no longer defines {hook}"
        ours = list(inspect.signature(getattr(TimedH11Protocol, hook)).parameters)
        theirs = list(inspect.signature(getattr(H11Protocol, hook)).parameters)
        assert len(ours) == len(theirs), hook
    assert "cycle" in inspect.getsource(H11Protocol.data_received) + inspect.getsource(H11Protocol.handle_events)
    # the idle time between requests is bounded by uvicorn's keep-alive timer, set once a response is done
    assert "timeout_keep_alive" in inspect.getsource(H11Protocol.on_response_complete)
    # room for new connections is made from uvicorn's shared set of open connections
    assert "self.connections = server_state.connections" in inspect.getsource(H11Protocol.__init__)
