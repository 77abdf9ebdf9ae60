# syntax=docker/dockerfile:1
# The igny8 image: one image for the API, the worker and the migrations (docker-compose.yml
# picks the command: `igny8 api`, `igny8 worker`, `igny8 db upgrade`, `igny8 simulator`).
#
#   docker build -t igny8 .
#   docker run --rm igny8 igny8 --help

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: a virtualenv with igny8 and its dependencies ------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src

# Dependencies first, from pyproject.toml alone, so a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# Then the project itself (a regular, non-editable install; .dockerignore keeps the
# context to the sources).
COPY . .
RUN pip install --no-deps . \
 && igny8 --help > /dev/null

# ---- runtime ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MEDIA_DIR=/data/media

RUN groupadd --system --gid 10001 igny8 \
 && useradd --system --uid 10001 --gid igny8 --home-dir /home/igny8 --create-home igny8

COPY --from=build /opt/venv /opt/venv

# /data/media is a named volume in compose: it copies this directory's owner on first use,
# so the non-root user can write images there. core.settings.DATA_DIR (next to the
# installed package) holds the demo API key that `igny8 seed-demo` writes.
RUN mkdir -p /data/media \
 && data_dir="$(python -c 'from core.settings import DATA_DIR; print(DATA_DIR)')" \
 && mkdir -p "$data_dir" \
 && chown -R igny8:igny8 /data "$data_dir"

USER igny8
WORKDIR /home/igny8

EXPOSE 8000
CMD ["igny8", "--help"]
