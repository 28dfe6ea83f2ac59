# A local stand-in for python:3.11-slim-bookworm, for machines that reach Debian's package
# archive but no container registry. scripts/images.py builds it on top of a debootstrap'ed
# bookworm root filesystem and tags it with the upstream name, so that images/Dockerfile
# builds unchanged. Debian bookworm's Python is 3.11, the same minor version as upstream.
ARG DEBIAN_IMAGE=localhost/debian:bookworm
FROM ${DEBIAN_IMAGE}
ENV LANG=C.UTF-8
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Unpinned on purpose: whatever the bookworm archive holds today, as upstream's image does.
# The upstream image has `python` on PATH and no EXTERNALLY-MANAGED marker; match both.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-pip ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/python3 /usr/local/bin/python \
    && rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED
CMD ["python3"]
