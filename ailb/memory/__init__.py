"""Conversation memory: turns of a session, stored in ChromaDB, recalled before a request."""
