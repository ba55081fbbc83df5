"""The trio shell: Noise sessions over TCP (re-exports only)."""

from meshnode.net.transport import (
    Session,
    SessionConfig,
    SessionStatistics,
    connect_session,
    open_session,
    serve_listeners,
    serve_sessions,
)

__all__ = [
    "Session",
    "SessionConfig",
    "SessionStatistics",
    "connect_session",
    "open_session",
    "serve_listeners",
    "serve_sessions",
]
