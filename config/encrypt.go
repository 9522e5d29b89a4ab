package config

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// EncPrefix starts a key reference sealed with the master key:
// `enc:v1:<base64 of nonce || ciphertext || tag>`, AES-256-GCM.
const EncPrefix = "enc:v1:"

// MasterKeyEnv names the environment variable holding the master key as 64
// hex characters; MasterKeyEnv + "_FILE" names a file holding it instead.
const MasterKeyEnv = "GATEWAY_MASTER_KEY"

// encAAD is authenticated with every value: a ciphertext is bound to its
// format version, so a later format can never be fed a v1 value. The YAML
// path is deliberately not bound: a value must survive a provider's rename
// and move between files, and whoever can move a value in the file can as
// well point its provider's base_url elsewhere.
var encAAD = []byte("enc:v1")

const (
	nonceSize = 12
	tagSize   = 16
)

// encToken finds sealed values in a file's text, for rekeying.
var encToken = regexp.MustCompile(`enc:v1:[A-Za-z0-9+/]+={0,2}`)

// ErrNoMasterKey is wrapped by the error of a master key that is not given.
var ErrNoMasterKey = errors.New("no master key")

// MasterKey seals and opens `enc:v1:` key references. It never prints:
// every error that names it says only where it came from.
type MasterKey struct{ aead cipher.AEAD }

// ParseMasterKey reads a master key written as 64 hex characters, spaces
// around them ignored. from names where it came from, for the error.
func ParseMasterKey(s, from string) (*MasterKey, error) {
	s = strings.TrimSpace(s)
	// hex's own errors quote the offending byte: they are not passed on.
	if len(s) != 64 {
		return nil, fmt.Errorf("%s must be 64 hex characters (32 bytes), got %d characters", from, len(s))
	}
	raw, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%s must be 64 hex characters (32 bytes): it holds a character that is not hex", from)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	return &MasterKey{aead: aead}, nil
}

// LoadMasterKey reads the master key from the environment variable name,
// or from the file named by name + "_FILE" (a relative path is taken from
// the working directory). Neither set: an error wrapping ErrNoMasterKey;
// both set: an error, since which one is meant cannot be told.
func LoadMasterKey(lookupEnv func(string) (string, bool), name string) (*MasterKey, error) {
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	v, hasValue := lookupEnv(name)
	hasValue = hasValue && v != ""
	path, hasFile := lookupEnv(name + "_FILE")
	hasFile = hasFile && path != ""
	switch {
	case hasValue && hasFile:
		return nil, fmt.Errorf("both %s and %s_FILE are set; set one", name, name)
	case hasValue:
		return ParseMasterKey(v, name)
	case hasFile:
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, fmt.Errorf("%s_FILE: %w", name, err)
		}
		b, err := os.ReadFile(abs)
		if err != nil {
			return nil, fmt.Errorf("reading %s_FILE %s: %w", name, abs, errors.Unwrap(err))
		}
		return ParseMasterKey(string(b), name+"_FILE "+abs)
	}
	return nil, fmt.Errorf("%w: set %s or %s_FILE", ErrNoMasterKey, name, name)
}

// Encrypt seals a secret under a fresh random nonce and returns its
// reference, `enc:v1:...`.
func (k *MasterKey) Encrypt(secret string) (string, error) {
	if secret == "" {
		return "", errors.New("the secret is empty")
	}
	nonce := make([]byte, nonceSize, nonceSize+len(secret)+tagSize)
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("drawing a nonce: %w", err)
	}
	sealed := k.aead.Seal(nonce, nonce, []byte(secret), encAAD)
	return EncPrefix + base64.StdEncoding.EncodeToString(sealed), nil
}

// Decrypt opens a reference made by Encrypt. Its errors never hold the
// value, the ciphertext or the key.
func (k *MasterKey) Decrypt(ref string) (string, error) {
	sealed, err := unseal(ref)
	if err != nil {
		return "", err
	}
	plain, err := k.aead.Open(nil, sealed[:nonceSize], sealed[nonceSize:], encAAD)
	if err != nil {
		return "", errors.New("enc: value does not decrypt with the master key (another master key, or an altered value)")
	}
	return string(plain), nil
}

// unseal checks a reference's form and returns nonce || ciphertext || tag.
func unseal(ref string) ([]byte, error) {
	b64, ok := strings.CutPrefix(strings.TrimSpace(ref), EncPrefix)
	if !ok {
		return nil, errors.New("enc: value must start with " + EncPrefix + " (the only version)")
	}
	sealed, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, errors.New("enc: value is not valid base64 (cut or altered)")
	}
	// A sealed secret is at least one byte long.
	if len(sealed) < nonceSize+1+tagSize {
		return nil, errors.New("enc: value is too short (cut or altered)")
	}
	return sealed, nil
}

// Rekey replaces every `enc:v1:` token in data, comments included, by the
// same secret sealed under to, and returns the new text and the number of
// tokens. The rest of data is kept byte for byte. A token that does not
// open with from fails the whole rekey, naming its line.
func Rekey(data []byte, from, to *MasterKey) ([]byte, int, error) {
	locs := encToken.FindAllIndex(data, -1)
	var out bytes.Buffer
	out.Grow(len(data) + len(locs)*4)
	last := 0
	for _, loc := range locs {
		line := 1 + bytes.Count(data[:loc[0]], []byte("\n"))
		secret, err := from.Decrypt(string(data[loc[0]:loc[1]]))
		if err != nil {
			return nil, 0, fmt.Errorf("line %d: %w", line, err)
		}
		sealed, err := to.Encrypt(secret)
		if err != nil {
			return nil, 0, fmt.Errorf("line %d: %w", line, err)
		}
		out.Write(data[last:loc[0]])
		out.WriteString(sealed)
		last = loc[1]
	}
	out.Write(data[last:])
	return out.Bytes(), len(locs), nil
}
