"""The fake WordPress lives with the simulator (the demo falls back to it where a real
WordPress cannot run); tests import it from here as before."""

from simulator.fake_wordpress import (
    DEFAULT_APP_PASSWORD,
    DEFAULT_USER,
    FakeWordPress,
    self_signed_certificate,
)

__all__ = ["DEFAULT_APP_PASSWORD", "DEFAULT_USER", "FakeWordPress", "self_signed_certificate"]
