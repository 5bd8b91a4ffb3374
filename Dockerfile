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

# mke2fs formats the node plugin's output filesystems (--output-filesystem=
# ext4): the program and the libraries it links, from the build stage's
# Debian, on a base that has glibc.
# (cp follows the libraries' symlinks: their sonames become files.)
RUN mkdir -p /e2fs && cp --parents /usr/sbin/mke2fs /etc/mke2fs.conf \
      $(ldd /usr/sbin/mke2fs | awk '$2 == "=>" {print $3}' | grep -v libc.so) /e2fs/

FROM gcr.io/distroless/base-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
COPY --from=build /e2fs/ /
# The CLI and the controller run as this user; the node plugin's DaemonSet
# runs artifacts-csi-node as root (privileged: it makes bind mounts).
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/artifacts"]
