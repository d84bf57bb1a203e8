# syntax=docker/dockerfile:1
# AILB container: the same single PyInstaller binary as `make binary`, on a slim Debian.
#
#   docker build -t ailb --build-arg AILB_BUILD_COMMIT=$(git rev-parse --short HEAD) .
#   docker run --rm -p 8080:8080 --env-file ailb.env -v ailb-data:/var/lib/ailb ailb
#
# Stage 1 builds dist/ailb; stage 2 holds only that file, the default configuration and curl
# (for the health check). Both stages are Debian 12 "bookworm", so the glibc the binary was
# linked against in the builder is the one it finds at run time.

# --- builder -----------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS builder

# PyInstaller reads shared-library dependencies with objdump (binutils); the wheels AILB needs
# are all prebuilt (manylinux), so no compiler.
RUN apt-get update \
 && apt-get install -y --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1

# The runtime dependencies and PyInstaller only: not the whole `dev` extra (pytest, mypy, ruff,
# openai, anthropic), which the spec excludes from the binary anyway.
COPY pyproject.toml README.md build_binary.spec ./
COPY ailb ./ailb
COPY scripts ./scripts
RUN python -m venv /venv \
 && /venv/bin/pip install . "pyinstaller>=6.10"

# The build context has no .git: commit and date come in as build arguments and end up in
# ailb/_build.json inside the binary (`ailb --version`).
ARG AILB_BUILD_COMMIT=unknown
ARG AILB_BUILD_DATE=
RUN AILB_BUILD_COMMIT="$AILB_BUILD_COMMIT" AILB_BUILD_DATE="$AILB_BUILD_DATE" \
    /venv/bin/python scripts/release.py build-info \
 && /venv/bin/pyinstaller --noconfirm --clean --log-level WARN build_binary.spec \
 && ./dist/ailb --version

# --- runtime -----------------------------------------------------------------------------------
FROM debian:bookworm-slim

# curl for HEALTHCHECK (the image has no Python); ca-certificates for operators who point
# SSL_CERT_FILE at the system store (the binary itself carries certifi's bundle).
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# A fixed non-root uid/gid (10001), so volume ownership is predictable on the host.
RUN groupadd --system --gid 10001 ailb \
 && useradd --system --uid 10001 --gid ailb --home-dir /var/lib/ailb --no-create-home \
            --shell /usr/sbin/nologin ailb \
 && install -d -m 0750 -o ailb -g ailb /var/lib/ailb

COPY --from=builder /src/dist/ailb /usr/local/bin/ailb
COPY config/ailb.yaml /etc/ailb/ailb.yaml

# Every persistent file lives in AILB_DATA_DIR: admin key, keys/spend database, and the ChromaDB
# memory and RAG stores (memory/, rag/). One volume keeps them all.
ENV AILB_DATA_DIR=/var/lib/ailb
VOLUME ["/var/lib/ailb"]

# 8080: HTTP API, /healthz, /readyz, /metrics. 50051: gRPC (MarchProxy ModuleService).
EXPOSE 8080 50051

USER 10001:10001
WORKDIR /var/lib/ailb

# Liveness: /healthz answers 200 whenever the process serves (HTTP_PORT may be overridden).
# The one-file binary unpacks itself into /tmp on start, hence the start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD curl -fsS -o /dev/null "http://127.0.0.1:${HTTP_PORT:-8080}/healthz" || exit 1

# SIGTERM drains for SERVER__GRACE_S (30 s): stop with a longer timeout (`docker stop -t 45`,
# compose stop_grace_period). The binary's bootloader forwards signals to AILB, so it can be
# PID 1 without an init.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/ailb", "--config", "/etc/ailb/ailb.yaml"]
