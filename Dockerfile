# Build: the release binary, with the Swagger UI bundled (no download at build or run time).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
COPY examples ./examples
RUN cargo build --release --locked --bin cloudtrail-inspector

# Run: a small image with CA certificates for AWS and Guance over TLS. The data directory
# exists in the image, owned by the service's user: a volume mounted there (docker-compose.yml)
# starts as a copy of it, where a directory missing from the image would be created owned by
# root, and the service could not write its instance id or key file.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/cloudtrail-inspector --create-home inspector \
 && install -d -o inspector -g inspector -m 0700 /var/lib/cloudtrail-inspector/data
COPY --from=build /src/target/release/cloudtrail-inspector /usr/local/bin/cloudtrail-inspector
USER inspector
WORKDIR /var/lib/cloudtrail-inspector
ENV LISTEN_ADDR=0.0.0.0:8080 \
    DATA_DIR=/var/lib/cloudtrail-inspector/data \
    LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["cloudtrail-inspector"]
CMD ["serve"]
