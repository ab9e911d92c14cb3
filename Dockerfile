# Strata broker image.
#   docker build -t strata .            (podman: add --format docker to keep HEALTHCHECK)
#   docker run -d -p 7400:7400 -p 9400:9400 -v strata-data:/var/lib/strata strata
# Ports, volume and config path are documented in docs/operations.md.

FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
# Cache the registry and target dir between builds; copy the binary out of the cache.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p strata \
    && install -D -m 0755 target/release/strata /out/strata
# The image's default configuration: the documented defaults, listening on all
# interfaces inside the container, data on the volume.
RUN sed -e 's|^listen = "127.0.0.1:7400"|listen = "0.0.0.0:7400"|' \
        -e 's|^metrics_listen = "127.0.0.1:9400"|metrics_listen = "0.0.0.0:9400"|' \
        -e 's|^data_dir = "./data"|data_dir = "/var/lib/strata"|' \
        config/strata.toml > /out/strata.toml \
    && grep -q '^listen = "0.0.0.0:7400"' /out/strata.toml \
    && grep -q '^data_dir = "/var/lib/strata"' /out/strata.toml

FROM docker.io/library/debian:bookworm-slim
RUN groupadd --system --gid 10001 strata \
    && useradd --system --uid 10001 --gid strata --home-dir /var/lib/strata --shell /usr/sbin/nologin strata \
    && mkdir -p /var/lib/strata /etc/strata \
    && chown strata:strata /var/lib/strata
COPY --from=build /out/strata /usr/local/bin/strata
COPY --from=build /out/strata.toml /etc/strata/strata.toml
USER strata:strata
VOLUME ["/var/lib/strata"]
# gRPC, Prometheus metrics
EXPOSE 7400 9400
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["strata", "health", "--config", "/etc/strata/strata.toml"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["strata"]
CMD ["serve", "--config", "/etc/strata/strata.toml"]
