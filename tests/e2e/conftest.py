"""The gateway fixtures (a real gateway in front of a real server) for the e2e tier."""

from tests.gateway.conftest import gateway_settings, http

__all__ = ["gateway_settings", "http"]
