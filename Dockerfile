# syntax=docker/dockerfile:1
#
# vmsh-scheduler container image.
#
#   docker build -t vmsh-scheduler:0.1.0 .
#   docker run --rm -p 9090:9090 \
#     -v vmsh-state:/var/lib/vmsh-scheduler \
#     -v "$PWD/namespaces.yaml:/etc/vmsh-scheduler/namespaces.yaml:ro" \
#     -v "$PWD/anchors.yaml:/etc/vmsh-scheduler/anchors.yaml:ro" \
#     --env-file secrets.env vmsh-scheduler:0.1.0
#
# Two stages: the Rust toolchain image builds the release binary; a slim Debian of the same
# release (so the binary finds the glibc it was linked against) runs it with nothing but CA
# certificates (rustls checks HTTPS targets against the system store). Tests check this
# file's key properties (tests/it/deploy.rs) and lint it with hadolint.

# ---- build ----
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Only what the release binary is built from; see .dockerignore.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The registry and target folders are BuildKit caches: a rebuild after a source change
# recompiles the crate, not its dependencies. The binary is copied out of the cache with its
# line tables (Cargo.toml's release profile keeps them so panic backtraces name file and
# line) compressed: about 33 MB instead of 88.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && mkdir -p /out \
    && objcopy --compress-debug-sections=zlib target/release/vmsh-scheduler /out/vmsh-scheduler

# ---- runtime ----
FROM debian:bookworm-slim AS runtime

# ca-certificates follows Debian's security updates: pinning its version would only make
# the image unbuildable after the next point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric UID/GID, so Kubernetes can check runAsNonRoot and volumes can be owned
# by it (deploy/kubernetes/deployment.yaml uses the same numbers).
# (--no-log-init: a high UID would otherwise leave a large sparse lastlog in the layer.)
RUN groupadd --gid 10001 vmsh \
    && useradd --uid 10001 --gid 10001 --no-log-init --no-create-home \
       --home-dir /var/lib/vmsh-scheduler --shell /usr/sbin/nologin vmsh \
    && mkdir -p /etc/vmsh-scheduler /var/lib/vmsh-scheduler/root /var/lib/vmsh-scheduler/state \
    && chown -R 10001:10001 /var/lib/vmsh-scheduler \
    && chmod 0750 /var/lib/vmsh-scheduler

COPY --from=build /out/vmsh-scheduler /usr/local/bin/vmsh-scheduler

# Config is read from mounted files (both hot-reload when their content changes); the
# scheduler writes only under VMSH_ROOT (batches in, receipts and journals out) and the
# state folder, both on the volume. Secrets (keys, RPC passwords) come from the
# environment the runtime passes in, never from the image.
ENV VMSH_ROOT=/var/lib/vmsh-scheduler/root \
    VMSH_STATE=/var/lib/vmsh-scheduler/state/scheduler.json \
    VMSH_NAMESPACES=/etc/vmsh-scheduler/namespaces.yaml \
    VMSH_ANCHORS=/etc/vmsh-scheduler/anchors.yaml \
    METRICS_HOST=0.0.0.0 \
    METRICS_PORT=9090 \
    LOG_FORMAT=json \
    LOG_LEVEL=info

VOLUME ["/var/lib/vmsh-scheduler"]
WORKDIR /var/lib/vmsh-scheduler
EXPOSE 9090
USER 10001:10001

# No HEALTHCHECK: the image has no HTTP client to run one with, and orchestrators probe
# /livez and /readyz themselves (see deploy/kubernetes/deployment.yaml).

# SIGTERM drains: /readyz turns 503, running anchors get VMSH_SHUTDOWN_GRACE_S to finish,
# the state is written, exit 0. Give the runtime a longer stop timeout than that grace
# (docker stop -t, terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/vmsh-scheduler"]
CMD ["run"]
