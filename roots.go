package main

// The container image is FROM scratch: no /etc/ssl, so no CA roots for
// the providers' HTTPS. This package embeds Mozilla's roots (as curated by
// the Go team, updated with the module) and installs them only as the
// fallback: wherever the system has roots (a host, a distro image), the
// system's are used, and its own additions (a corporate CA) still count.
import _ "golang.org/x/crypto/x509roots/fallback"
