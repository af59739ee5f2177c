# Build: queries are checked against the committed .sqlx/ data, so no database is needed here.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin switchboard

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /app switchboard
WORKDIR /app
COPY --from=build /src/target/release/switchboard /usr/local/bin/switchboard
COPY config ./config
USER switchboard
ENV SWITCHBOARD__HTTP__BIND=0.0.0.0:8080 \
    SWITCHBOARD__LOG__FORMAT=json
EXPOSE 8080
ENTRYPOINT ["switchboard"]
CMD ["serve"]
