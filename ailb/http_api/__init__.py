"""The OpenAI-compatible HTTP edge: app factory, thin handlers, SSE, errors in OpenAI's shape."""
