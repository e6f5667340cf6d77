# shipmate's container image. Two ways to the same runtime stage (README: "Container image and
# Kubernetes"):
#
#   docker build -t shipmate .
#       compiles in a rust:<version> builder stage (needs a registry for rust and debian images);
#   cargo build --release --locked && docker build --target prebuilt -t shipmate .
#       copies a binary built outside (BINARY, a path in the build context; needs only debian).
#
# The stages are ordered so that `--target prebuilt` never reaches the Rust builder, even on
# builders that run every stage before the target (buildah < 1.29, Docker without BuildKit).

ARG RUST_VERSION=1.95

# --- runtime: everything but the binary ------------------------------------------------------
FROM debian:bookworm-slim AS runtime-base
# ca-certificates for outbound TLS (Slack, Discord, GitHub, webhooks, the Kubernetes API); tini as
# PID 1, which forwards SIGTERM to the bot and reaps what deploy scripts leave behind. Versions are
# not pinned: bookworm's point releases replace them (a pin breaks the build at the next security
# update), and the base image's tag already fixes the Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 shipmate \
    && useradd --uid 10001 --gid 10001 --home-dir /app/data --no-create-home \
        --shell /usr/sbin/nologin shipmate \
    && mkdir -p /app/data \
    && chown 10001:10001 /app/data
WORKDIR /app
# Migrations are embedded in the binary; the SQL is shipped for operators to read.
COPY migrations /app/migrations
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# Mount bot.toml (and any deploy scripts) at /app; the SQLite file belongs on this volume
# (database.url = "sqlite://data/shipmate.db"). /app itself stays root-owned and read-only.
VOLUME ["/app/data"]
# server.listen must be "0.0.0.0:8080" in the container's bot.toml: the port and the health check
# below assume it.
EXPOSE 8080
# bash's /dev/tcp instead of curl: the slim image has bash, and curl with its libraries would add
# megabytes for one request. Healthy = /readyz answers 200 (database reachable, migrations applied).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /readyz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -Eq '^HTTP/1\\.[01] 200 '"]
ENTRYPOINT ["/usr/bin/tini", "--", "shipmate"]
CMD ["serve", "--config", "/app/bot.toml"]

# --- prebuilt: the runtime with a binary from the build context -------------------------------
# The binary must be built for x86_64/aarch64 glibc ≤ bookworm's (2.36), e.g. on Debian 12.
FROM runtime-base AS prebuilt
ARG BINARY=target/release/shipmate
COPY ${BINARY} /usr/local/bin/shipmate

# --- build: compile from source -----------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# benches/ because Cargo.toml declares them; migrations/ because sqlx::migrate! embeds them.
COPY benches ./benches
COPY migrations ./migrations
COPY src ./src
RUN cargo build --release --locked --bin shipmate

# --- the default target: the runtime with the binary compiled above ---------------------------
FROM runtime-base AS runtime
COPY --from=build /src/target/release/shipmate /usr/local/bin/shipmate
