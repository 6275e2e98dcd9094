# The `fhec` binary in a small image; its default command serves the models in /models with
# keys in /keys (a volume: replicas share it). Build from the repository's root:
#   docker build -t fhec .
#   docker run -p 8080:8080 -v $PWD/models-fhe:/models:ro -v fhec-keys:/keys fhec
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin fhec \
    && strip target/release/fhec

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 fhec && mkdir -p /keys /models && chown fhec /keys
COPY --from=build /src/target/release/fhec /usr/local/bin/fhec
USER fhec
EXPOSE 8080
VOLUME ["/keys"]
# one evaluation at a time using every core the container has; 16 waiting; 4 GiB of keys
ENTRYPOINT ["/bin/sh", "-c", "exec fhec serve /models/*.fhe --listen 0.0.0.0:8080 --keys /keys --max-queue 16 --key-cache-bytes 4294967296 \"$@\"", "--"]
