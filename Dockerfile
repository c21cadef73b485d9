# Switchyard in a container: one static-ish binary with every backend built in.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --features redis,nats,kafka

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
COPY topics /etc/switchyard/topics
COPY handlers /etc/switchyard/handlers
WORKDIR /var/lib/switchyard
ENV SWITCHYARD_LISTEN=0.0.0.0:8080 \
    SWITCHYARD_TOPICS_DIR=/etc/switchyard/topics \
    SWITCHYARD_HANDLERS_DIR=/etc/switchyard/handlers \
    SWITCHYARD_DATA_DIR=/var/lib/switchyard/data
EXPOSE 8080
ENTRYPOINT ["switchyard"]
CMD ["serve"]
