# shipmate: multi-stage build; the runtime image holds the binary, the migrations and nothing else.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
RUN cargo build --release --locked --bin shipmate

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --create-home shipmate
WORKDIR /app
COPY --from=build /src/target/release/shipmate /usr/local/bin/shipmate
# Migrations are embedded in the binary; the SQL is shipped too for operators to read.
COPY migrations /app/migrations
USER shipmate
# Mount bot.toml (and deploy scripts) at /app; keep the SQLite file on a volume.
VOLUME ["/app/data"]
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--", "shipmate"]
CMD ["serve", "--config", "/app/bot.toml"]
