# Build: queries are checked against the committed .sqlx/ data, so no database is needed here.
# One image, two programs: `switchboard` (the entrypoint) and the provider simulator `cpaas-sim`
# (docker-compose.yml's demo profile runs it with `entrypoint: ["cpaas-sim"]`).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p switchboard -p cpaas-sim

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /app switchboard
WORKDIR /app
COPY --from=build /src/target/release/switchboard /usr/local/bin/switchboard
COPY --from=build /src/target/release/cpaas-sim /usr/local/bin/cpaas-sim
COPY config ./config
USER switchboard
ENV SWITCHBOARD__HTTP__BIND=0.0.0.0:8080 \
    SWITCHBOARD__LOG__FORMAT=json
# 8080: HTTP (serve); 9100: a worker's /metrics (worker.metrics_bind); 9090: cpaas-sim.
EXPOSE 8080 9100 9090
ENTRYPOINT ["switchboard"]
CMD ["serve"]
