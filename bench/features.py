"""The opt-in targets that price AILB's memory and RAG: ``ailb-memory`` and ``ailb-rag``.

Both are one second AILB process started with ``ENABLE_MEMORY: true`` and ``ENABLE_RAG: true``
(``targets.ailb(..., features=True)``), so that the plain ``ailb`` process keeps measuring the
gateway without either. Only one target is loaded at a time (rows.py), and the memory target's
deferred writes are waited for after each of its slices, so neither charges the other.

- ``ailb-memory``: every request carries ``x-session-id``, one of :data:`SESSIONS` in turn, and
  one of :data:`QUESTIONS` (two per session), so it reads the session (its recent turns are
  replayed upstream; older ones, the same question asked before, are recalled by similarity)
  and queues its turn for the memory writer. ("hello" would recall nothing: the embedder drops
  it as a stop word.) Before measuring, every session is filled until it holds more turns than
  the replayed window and older ones are recalled: the steady state of a long conversation, not
  the cheap start of an empty one.
- ``ailb-rag``: every request carries ``"rag": {"collection": "bench", "top_k": 3}`` and one of
  :data:`QUESTIONS` in turn, against a collection of :data:`DOCUMENTS` generated paragraphs
  ingested through the HTTP API before measuring. The process keeps one retrieval-cache entry
  (targets._FEATURES), so every request embeds its question and searches the collection.
"""

from __future__ import annotations

import http.client
import json
import random
import re
from typing import Any

import targets
from procs import BenchError
from procstat import wait_idle

COLLECTION = "bench"
TOP_K = 3
DOCUMENTS = 320
SESSIONS = tuple(f"bench-session-{i}" for i in range(4))
MAX_PREFILL = 1500  # requests per session at most
_INGEST_BATCH = 40

# Eight topics: the words that make a paragraph about one, and a question a user would ask.
_TOPICS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("vacation", "annual leave", "holiday", "carryover", "leave request", "time off"),
     "How many vacation days do I get, and does unused annual leave carry over?"),
    (("expense report", "receipt", "reimbursement", "hotel", "per diem", "mileage"),
     "How do I get a hotel receipt reimbursed after a business trip?"),
    (("backup", "server", "snapshot", "restore", "nightly job", "replica"),
     "How often are the servers backed up, and how long is a snapshot kept?"),
    (("password", "two-factor login", "lockout", "security token", "phishing", "badge"),
     "How often must I change my password, and what happens after a lockout?"),
    (("laptop", "onboarding", "monitor", "keyboard", "equipment order", "new hire"),
     "When will my laptop and monitor arrive during onboarding?"),
    (("parking", "garage permit", "bicycle rack", "shuttle", "visitor entrance", "commute"),
     "Where can visitors park, and do I need a garage permit?"),
    (("cafeteria", "lunch menu", "vegetarian dish", "allergy", "coffee", "kitchen"),
     "Does the cafeteria lunch menu have vegetarian dishes for people with an allergy?"),
    (("incident", "on-call pager", "outage", "escalation", "postmortem", "runbook"),
     "Who gets paged during an outage, and when is an incident escalated?"),
)
QUESTIONS = tuple(question for _, question in _TOPICS)

_NOUNS = ("team", "department", "handbook", "office", "region", "contractor", "employee",
          "schedule", "form", "portal", "wiki", "request", "manager", "budget", "quarter")
_PLACES = ("staff wiki", "main lobby", "team channel", "intranet portal", "weekly newsletter")
_PERIODS = ("month", "quarter", "year", "week")
_SENTENCES = (
    "The {a} guidance covers {b} and {c} for every {n} in the {m}.",
    "Staff should read the {a} page before asking about {b}, since the rules change each {p}.",
    "In most cases the {n} that owns {a} answers questions within two working days.",
    "Exceptions to the {a} rules need written approval, and {b} records are kept for {k} months.",
    "A short summary of {a} and {b} is posted in the {l} every {p}.",
    "When {a} and {c} conflict, the {m} decides and notes the outcome in the {l}.",
    "New rules on {b} take effect at the start of the next {p} for each {n}.",
    "Questions about {c} that the {l} does not answer go to the {m} through a {n} {o}.",
)


def corpus(count: int = DOCUMENTS) -> list[dict[str, str]]:
    """``count`` short paragraphs (about 400 to 700 characters, one chunk each), the same on
    every run: filler sentences around the words of one topic, now and then a word of another."""
    rng = random.Random(20261127)
    docs: list[dict[str, str]] = []
    for i in range(count):
        words = _TOPICS[i % len(_TOPICS)][0]
        other = _TOPICS[rng.randrange(len(_TOPICS))][0]
        sentences = []
        for _ in range(rng.randint(4, 6)):
            a, b, c = rng.sample(words, 3)
            if rng.random() < 0.2:
                c = rng.choice(other)
            n, m, o = rng.sample(_NOUNS, 3)
            text = rng.choice(_SENTENCES).format(a=a, b=b, c=c, n=n, m=m, o=o,
                                                 l=rng.choice(_PLACES),
                                                 p=rng.choice(_PERIODS), k=rng.randint(3, 36))
            sentences.append(text[0].upper() + text[1:])
        docs.append({"id": f"doc-{i:03d}", "text": " ".join(sentences)})
    return docs


def _on_topic(doc_id: str, topic: int) -> bool:
    """Whether ``doc_id`` (doc-NNN) is one of the corpus's paragraphs on ``topic``."""
    found = re.fullmatch(r"doc-(\d+)", doc_id)
    return found is not None and int(found[1]) % len(_TOPICS) == topic


def _call(port: int, method: str, path: str, body: Any, headers: dict[str, str],
          timeout: float = 120.0) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=json.dumps(body).encode(), headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def memory_target(base: targets.Target) -> targets.Target:
    """``ailb-memory`` on the feature process, its sessions filled to the steady state."""
    target = targets.Target(
        "ailb-memory", f"AILB with memory: x-session-id, {len(SESSIONS)} sessions and "
        f"{len(QUESTIONS)} questions in turn",
        base.json_port, base.stream_port, base.pid, auth=base.auth, questions=QUESTIONS,
        sessions=SESSIONS, drain=True)
    sent = sum(_fill(target, i) for i in range(target.variants()))
    wait_idle(target.pid)
    print(f"ailb-memory: {len(SESSIONS)} sessions filled with {sent} turns; "
          f"x-ailb-memory: {_memory_note(target)}", flush=True)
    return target


def _fill(target: targets.Target, variant: int) -> int:
    """Send one variant (a session and a question) until the session's replayed window is
    full (it stopped growing for 20 turns) and older turns are recalled; returns the turns
    sent. Raises BenchError when that does not happen."""
    best, since = -1, 0
    for sent in range(1, MAX_PREFILL + 1):
        status, headers, data = _call(target.json_port, "POST", "/v1/chat/completions",
                                      json.loads(target.body(False, variant)),
                                      target.headers(variant), timeout=30)
        found = re.fullmatch(r"recent=(\d+), recalled=(\d+)", headers.get("x-ailb-memory", ""))
        if status != 200 or found is None:
            raise BenchError(f"ailb-memory: filling session {target.sessions[variant]}: HTTP "
                             f"{status}, x-ailb-memory {headers.get('x-ailb-memory')!r}, "
                             f"body {data[:300]!r}")
        recent, recalled = int(found[1]), int(found[2])
        best, since = (recent, 0) if recent > best else (best, since + 1)
        if since >= 20 and recalled > 0:
            return sent
    raise BenchError(f"ailb-memory: session {target.sessions[variant]} still grows, or "
                     f"recalls nothing, after {MAX_PREFILL} turns")


def _memory_note(target: targets.Target) -> str:
    status, headers, _ = _call(target.json_port, "POST", "/v1/chat/completions",
                               json.loads(target.body(False)), target.headers(), timeout=30)
    return headers.get("x-ailb-memory", f"missing (HTTP {status})")


def rag_target(base: targets.Target) -> targets.Target:
    """``ailb-rag`` on the feature process, after the corpus is ingested."""
    target = targets.Target(
        "ailb-rag", f"AILB with RAG: top {TOP_K} of {DOCUMENTS} paragraphs, "
        f"{len(QUESTIONS)} questions in turn", base.json_port, base.stream_port, base.pid,
        auth=base.auth, questions=QUESTIONS, rag={"collection": COLLECTION, "top_k": TOP_K})
    hdrs = target.headers()
    status, _, data = _call(target.json_port, "POST", "/v1/rag/collections",
                            {"name": COLLECTION}, hdrs)
    if status != 201:
        raise BenchError(f"ailb-rag: creating the collection: HTTP {status} {data[:300]!r}")
    docs = corpus()
    for start in range(0, len(docs), _INGEST_BATCH):
        status, _, data = _call(target.json_port, "POST",
                                f"/v1/rag/collections/{COLLECTION}/documents",
                                {"documents": docs[start:start + _INGEST_BATCH]}, hdrs)
        if status not in (200, 201):
            raise BenchError(f"ailb-rag: ingesting: HTTP {status} {data[:300]!r}")
    for variant, question in enumerate(QUESTIONS):  # every question finds passages
        status, headers, data = _call(target.json_port, "POST", "/v1/chat/completions",
                                      json.loads(target.body(False, variant)), hdrs)
        sources = headers.get("x-ailb-rag-sources", "")
        ids = [s for s in sources.split(",") if s]
        if status != 200 or len(ids) != TOP_K or not _on_topic(ids[0], variant):
            raise BenchError(f"ailb-rag: {question!r} retrieved {sources!r} (HTTP {status}, "
                             f"{data[:300]!r})")
    wait_idle(target.pid)
    print(f"ailb-rag: {len(docs)} paragraphs ingested into '{COLLECTION}'", flush=True)
    return target
