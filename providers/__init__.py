"""One way to call AI providers, real or simulated (see providers.base for the contract).

Submodules are imported lazily by callers; importing this package does no I/O.
"""

from providers.base import (
    ImageProvider,
    ImageResult,
    ProviderError,
    TextProvider,
    TextResult,
)

__all__ = ["ImageProvider", "ImageResult", "ProviderError", "TextProvider", "TextResult"]
