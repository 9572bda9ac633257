"""Typed, frozen configuration: `edge.yaml` and the routes file, validated once at load."""

from edge.config.gateway import EdgeConfig, Listener, Upstream
from edge.config.load import ConfigError, Settings, load, load_routes
from edge.config.routes import RouteMatch, RoutesFile, RouteSpec

__all__ = [
    "ConfigError",
    "EdgeConfig",
    "Listener",
    "RouteMatch",
    "RouteSpec",
    "RoutesFile",
    "Settings",
    "Upstream",
    "load",
    "load_routes",
]
