"""The HTTP/WebSocket server: Twilio voice and SMS, approvals, health and status."""

from voxline.server.app import create_app
from voxline.server.config import HostedAgent, ServerConfig, load_agents
from voxline.server.runner import GracefulServer, build_server

__all__ = [
    "GracefulServer",
    "HostedAgent",
    "ServerConfig",
    "build_server",
    "create_app",
    "load_agents",
]
