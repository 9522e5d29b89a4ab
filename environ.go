package main

import "os"

// The environment variables a container sets instead of flags; a flag
// given on the command line beats them.
const (
	envConfig = "GATEWAY_CONFIG"
	envListen = "GATEWAY_LISTEN"
)

// configPath is the config file when no -config flag is given:
// GATEWAY_CONFIG, else ./gateway.yaml.
func configPath() string {
	if p := os.Getenv(envConfig); p != "" {
		return p
	}
	return "gateway.yaml"
}

// listenAddr is the listen address when no -listen flag is given:
// GATEWAY_LISTEN, else empty (the config's listen).
func listenAddr() string { return os.Getenv(envListen) }
