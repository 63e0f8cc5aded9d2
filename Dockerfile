# One image for every Python service of docker-compose.yml: Ray head, Ray workers, the stack
# bootstrap (`smoke up` against the cluster) and the simulator. Ray, Serve, Train and the smoke
# package are installed exactly as `make up` installs them locally, from pyproject.toml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libgomp1: LightGBM's OpenMP runtime (not in the slim image).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

# Ray and its workers run as an unprivileged user.
RUN useradd --create-home --uid 1000 smoke
WORKDIR /app

# Dependencies first, so that a code change does not reinstall Ray (about 1 GB).
COPY pyproject.toml README.md ./
RUN mkdir ingest actors serve train cluster \
    && touch ingest/__init__.py actors/__init__.py serve/__init__.py train/__init__.py cluster/__init__.py \
    && pip install -e . \
    && rm -rf ingest actors serve train cluster

# Editable install: the package finds configs/ beside its code (configs/pipeline.yaml, serve.yaml).
COPY ingest ingest
COPY actors actors
COPY serve serve
COPY train train
COPY cluster cluster
COPY configs configs
RUN pip install --no-deps -e . \
    && mkdir -p /app/data /app/var /tmp/ray \
    && chown -R smoke:smoke /app/data /app/var /tmp/ray

USER smoke
# Ray's dashboard/job API, Serve, and the metrics export port.
EXPOSE 6379 8265 8000 8080
CMD ["smoke", "--help"]
