"""The request pipeline: what every door (HTTP chat, ``/v1/messages``, gRPC chat and stream)
runs between its wire format and the router. See ``docs/architecture.md``.

Modules: :mod:`frame` (one per request: drain, auth, settle, release, log),
:mod:`chat` (the chat flow: precheck, memory/RAG, admit, cache, route, remember),
:mod:`admission`, :mod:`augment`, :mod:`cached`, :mod:`exchange`, :mod:`notes`,
:mod:`request_log`. Nothing is imported here: importing the package has no side effects.
"""
