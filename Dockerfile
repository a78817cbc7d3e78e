# `retinaface serve` in a container: build with the Rust toolchain, run from a slim image
# that holds the binary (with its embedded model) and nothing else, as a user without
# privileges.
#   docker build -t retinaface .
#   docker run --rm -p 8080:8080 retinaface
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p retinaface-cli --no-default-features --features serve \
    && strip target/release/retinaface

FROM debian:bookworm-slim
RUN useradd --system --no-create-home --uid 10001 retinaface
COPY --from=build /src/target/release/retinaface /usr/local/bin/retinaface
USER retinaface
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD ["retinaface", "serve", "--addr", "0.0.0.0:8080", "--healthcheck"]
ENTRYPOINT ["retinaface", "serve", "--addr", "0.0.0.0:8080"]
