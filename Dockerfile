# syntax=docker/dockerfile:1
# Multi-stage build: static binaries on a minimal, non-root base.
#   docker build -t tekton-artifacts --build-arg VERSION=$(git describe --always) .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd/ cmd/
COPY internal/ internal/
COPY pkg/ pkg/
COPY proto/ proto/
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/ ./cmd/...

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
# The CLI and the controller run as this user; the node plugin's DaemonSet
# runs artifacts-csi-node as root (privileged: it makes bind mounts).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/artifacts"]
