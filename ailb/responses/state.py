"""What the Responses API keeps of a response, and the seam of the store that keeps it.

A stored response is written before the last byte of its answer leaves (the ``response.completed``
event, or the JSON body), so ``previous_response_id`` works the moment the client has the answer.
It lives in the same store as the keys (SQLite in the data dir, or PostgreSQL with
``DATABASE_URL``), so it survives a restart and every gateway sharing the store sees it. It
belongs to the key that made it: another key is told it does not exist; the admin key reads all.

``messages`` is the conversation up to and including this response's answer, in the
pipeline's chat form (without ``instructions``, which are not carried over to a continuation,
as in OpenAI's API): a continuation on any provider starts from it.

Stored responses are kept :data:`RETENTION_S` (30 days, as OpenAI keeps them): each write
removes the ones older than that, through an index on ``created_at``, so the table stays
bounded by a month of traffic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, Protocol

RETENTION_S: Final = 30 * 86_400


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str
    key_id: str
    created_at: int  # Unix seconds
    response: dict[str, Any]  # the response object as answered
    input_items: list[dict[str, Any]]  # this request's input items, with ids
    messages: list[dict[str, Any]]  # the chat conversation through this answer

    def data(self) -> str:
        """The JSON text a store keeps beside the id, key and time."""
        return json.dumps({"response": self.response, "input_items": self.input_items,
                           "messages": self.messages}, separators=(",", ":"),
                          ensure_ascii=False)

    @classmethod
    def from_data(cls, id: str, key_id: str, created_at: int, data: str) -> StoredResponse:
        """The stored response from a store's row."""
        value = json.loads(data)
        return cls(id, key_id, int(created_at), value["response"], value["input_items"],
                   value["messages"])


class ResponseStore(Protocol):
    """Where stored responses live. Every call may fail: it then raises StoreUnavailable."""

    async def put_response(self, stored: StoredResponse) -> None:
        """Insert ``stored`` (replacing one of the same id), durably, before returning. Raises
        StoreUnavailable."""
        ...

    async def get_response(self, response_id: str) -> StoredResponse | None:
        """The stored response, or None. Raises StoreUnavailable."""
        ...

    async def delete_response(self, response_id: str) -> bool:
        """Forget a stored response; False when there was none. Raises StoreUnavailable."""
        ...
