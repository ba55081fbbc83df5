"""The trio shell: Noise sessions over TCP (re-exports only)."""

from meshnode.net.connect import connect_session, open_session, serve_listeners, serve_sessions
from meshnode.net.transport import Session, SessionConfig, SessionStatistics

__all__ = [
    "Session",
    "SessionConfig",
    "SessionStatistics",
    "connect_session",
    "open_session",
    "serve_listeners",
    "serve_sessions",
]
