# Switchyard in a container: one static-ish binary with every backend built in.
FROM rust:1-bookworm AS build
WORKDIR /src
# The whole workspace: Cargo reads every member's manifest (bench/,
# tests/kit) even to build the server alone, which is all this builds.
COPY . .
RUN cargo build --release --locked -p switchyard --bin switchyard --features redis,nats,kafka

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
COPY topics /etc/switchyard/topics
COPY handlers /etc/switchyard/handlers
WORKDIR /var/lib/switchyard
# Reachable from the network, so a token key is needed; pass one at run time
# (never bake it into the image):
#   docker run -e SWITCHYARD_JWT_SECRET=$(openssl rand -hex 32) -p 8080:8080 switchyard
# or SWITCHYARD_JWT_PUBLIC_KEY=/run/secrets/jwks.json with a mounted JWKS file.
ENV SWITCHYARD_LISTEN=0.0.0.0:8080 \
    SWITCHYARD_TOPICS_DIR=/etc/switchyard/topics \
    SWITCHYARD_HANDLERS_DIR=/etc/switchyard/handlers \
    SWITCHYARD_DATA_DIR=/var/lib/switchyard/data
EXPOSE 8080
ENTRYPOINT ["switchyard"]
CMD ["serve"]
