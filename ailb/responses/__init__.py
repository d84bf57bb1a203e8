"""The OpenAI Responses API on every provider: requests translated to chat (``convert``), chat
answers and streams back to response objects and events (``output``, ``events``), and the
stored state behind its seam (``state``). Pure; the door is :mod:`ailb.http_api.responses`."""
