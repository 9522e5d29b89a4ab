// Package leaktest finds secrets in what a test saw the gateway write:
// replies, logs, errors.
package leaktest

import "strings"

// Fixtures of the tests that seal keys: two master keys, as
// `openssl rand -hex 32` prints them, and a provider key. None may show up
// in any output.
const (
	MasterHex = "8f3a5c0e1d2b4a6978f0e1d2c3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f70"
	OtherHex  = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	PlainKey  = "sk-live-DO-NOT-PRINT-0123456789"
)

// Secrets are the fixtures as Find looks for them, a master key in
// capitals too (hex is read in either case).
var Secrets = []string{PlainKey, MasterHex, strings.ToUpper(MasterHex), OtherHex}

// window is how many characters of a ciphertext's base64 count as a leak:
// more than any word of a message, far less than a whole value.
const window = 12

// Find returns what out leaks: the first of secrets it holds, or the
// first 12 characters of a sealed `enc:v1:` value's base64 it holds; ""
// when it holds none.
func Find(out string, secrets, sealed []string) string {
	for _, s := range secrets {
		if s != "" && strings.Contains(out, s) {
			return s
		}
	}
	for _, ref := range sealed {
		b64 := strings.TrimPrefix(ref, "enc:v1:")
		for i := 0; i+window <= len(b64); i++ {
			if strings.Contains(out, b64[i:i+window]) {
				return b64[i : i+window]
			}
		}
	}
	return ""
}
