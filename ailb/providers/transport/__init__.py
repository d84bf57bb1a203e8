"""AILB's upstream HTTP/1.1 transport under httpx (see :mod:`.transport`)."""

from ailb.providers.transport.transport import LeanTransport

__all__ = ["LeanTransport"]
