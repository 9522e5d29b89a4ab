# The gateway as a container image: one static binary, nothing else.
#
# Build the binary first, then the image (no registry needed: FROM scratch):
#
#   CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o dist/gateway .
#   podman build --format docker -t gateway .      (or: docker build -t gateway .)
#
# Add -X main.version=v1.2.3 to -ldflags to stamp a version (/health shows it).
# --format docker keeps the HEALTHCHECK (podman's default OCI format drops it).
#
# Run it with a directory holding gateway.yaml mounted on /etc/gateway (the
# directory, not the file, so live reload sees edits): README, "Container".
FROM scratch

# CA roots are embedded in the binary (golang.org/x/crypto/x509roots/fallback).
COPY dist/gateway /usr/local/bin/gateway

# GATEWAY_LISTEN replaces the file's listen: a container is reached through
# its own interfaces. Auth off on 0.0.0.0 is refused at load, so the file
# needs gateway keys (auth.keys) or auth.anonymous: true; a sidecar that only
# its pod may reach sets GATEWAY_LISTEN=127.0.0.1:8080 instead.
ENV GATEWAY_CONFIG=/etc/gateway/gateway.yaml \
    GATEWAY_LISTEN=0.0.0.0:8080

# nonroot, the uid distroless images use; no /etc/passwd is needed.
USER 65532:65532
EXPOSE 8080

# gateway health finds the address the way serving does (GATEWAY_LISTEN),
# asks /health on loopback, and exits 1 with the reason when it is not ok.
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/gateway", "health", "-timeout", "3s"]

ENTRYPOINT ["/usr/local/bin/gateway"]
CMD ["serve"]
