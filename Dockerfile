# syntax=docker/dockerfile:1
# A static wschaos binary on a distroless base, run as a non-root user.
#   docker build -t wschaos .
#   docker run --rm -p 8080:8080 wschaos
# Mount your own configuration at /etc/wschaos/config.toml (a Kubernetes
# ConfigMap mounted at /etc/wschaos works as it is).

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The example configuration listens on loopback; in a container the proxy
# must listen on every interface.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/wschaos ./cmd/wschaos \
 && sed 's/^listen = .*/listen = ":8080"/' config.example.toml > /out/config.toml \
 && /out/wschaos version

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/wschaos /usr/local/bin/wschaos
COPY --from=build /out/config.toml /etc/wschaos/config.toml
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/wschaos"]
CMD ["run", "--config", "/etc/wschaos/config.toml"]
