package config

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// Secret is a key referenced from the config file: `${ENV_VAR}`,
// `file:/path/to/file`, `enc:v1:<base64>` sealed with the master key, or
// for gateway keys `sha256:<hex>`. It never prints its value: fmt verbs,
// YAML and JSON all show `<secret>` or the reference.
type Secret struct {
	ref string
	// value is behind a pointer because fmt prints a nested struct field by
	// field, without calling Format, when the verb is wrong for an
	// enclosing pointer (%s of a *Config); a pointer prints as an address.
	value *string
	hash  []byte
}

const redacted = "<secret>"

var envRef = regexp.MustCompile(`^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$`)

// UnmarshalYAML keeps the reference; Parse resolves it.
func (s *Secret) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return typeErr(n, "want a key reference such as ${ENV_VAR}, got a %s", kindName(n))
	}
	s.ref = n.Value
	return nil
}

// MarshalYAML writes the reference back, never the value.
func (s Secret) MarshalYAML() (any, error) { return s.ref, nil }

// MarshalJSON hides the secret.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// Format prints `<secret>` for every verb, so no %v, %s, %q or %x can leak it.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// String returns `<secret>`.
func (s Secret) String() string { return redacted }

// GoString returns `<secret>`.
func (s Secret) GoString() string { return redacted }

// Reveal returns the resolved value, for the one place that must send it.
func (s Secret) Reveal() string {
	if s.value == nil {
		return ""
	}
	return *s.value
}

// Ref returns the reference as written in the file (an env var name, a
// path or a sealed `enc:` value, never the key itself).
func (s Secret) Ref() string { return s.ref }

// errUnset marks a reference that points at nothing, which optional
// providers tolerate.
var errUnset = errors.New("unset")

// resolve reads the secret's value. allowHash admits the `sha256:` form;
// master gives the key that opens `enc:` values.
func (s *Secret) resolve(opt *Options, allowHash bool, master func() (*MasterKey, error)) error {
	ref := strings.TrimSpace(s.ref)
	switch {
	case envRef.MatchString(ref) && opt.SkipSecrets:
	case envRef.MatchString(ref):
		name := envRef.FindStringSubmatch(ref)[1]
		v, ok := opt.LookupEnv(name)
		if !ok || v == "" {
			return fmt.Errorf("environment variable %s is not set: %w", name, errUnset)
		}
		s.value = &v
	case strings.HasPrefix(ref, "file:"):
		path := s.file(opt.Dir)
		if path == "" {
			return errors.New("file: reference has no path")
		}
		if opt.SkipSecrets {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("key file %s does not exist: %w", path, errUnset)
			}
			return fmt.Errorf("reading key file %s: %w", path, errors.Unwrap(err))
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return fmt.Errorf("key file %s is empty: %w", path, errUnset)
		}
		s.value = &v
	case allowHash && strings.HasPrefix(ref, "sha256:"):
		h, err := hex.DecodeString(strings.TrimPrefix(ref, "sha256:"))
		if err != nil || len(h) != 32 {
			return errors.New("sha256: reference must be 64 hex digits")
		}
		s.hash = h
	case strings.HasPrefix(ref, "enc:"):
		// The form is checked even with no master key to open it.
		if _, err := unseal(ref); err != nil {
			return err
		}
		k, err := master()
		if err != nil {
			return fmt.Errorf("cannot decrypt the enc: value: %w", err)
		}
		v, err := k.Decrypt(ref)
		if err != nil {
			return err
		}
		s.value = &v
	case ref == "":
		return errors.New("key is empty")
	default:
		if allowHash {
			return errors.New("key must be a reference: ${ENV_VAR}, file:/path, enc:v1:... or sha256:<hex>; a literal key does not belong in the file")
		}
		return errors.New("key must be a reference: ${ENV_VAR}, file:/path or enc:v1:...; a literal key does not belong in the file")
	}
	return nil
}

// file returns the path a `file:` reference reads, relative ones taken
// from dir; "" for the other forms.
func (s *Secret) file(dir string) string {
	path, ok := strings.CutPrefix(strings.TrimSpace(s.ref), "file:")
	if !ok || path == "" {
		return ""
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	return path
}

// resolved is what a config's key references came to when it was read.
type resolved struct {
	// digest covers every reference and what it resolved to (the value,
	// or why there was none), so that a reload tells a rotated key from
	// an unchanged one without keeping values; it is compared, never
	// shown.
	digest [sha256.Size]byte
	// files are the paths of the `file:` references, read or not: their
	// directories are watched.
	files []string
}

// resolve resolves s and records it in the parse's resolved. Validating
// without secrets, an `enc:` value is still opened when the master key is
// given, and counted in encSkipped when it is not.
func (p *parser) resolve(s *Secret, allowHash bool) error {
	err := s.resolve(p.opt, allowHash, p.masterKey)
	if f := s.file(p.opt.Dir); f != "" {
		p.resolved.files = append(p.resolved.files, f)
	}
	got := "=" + s.Reveal()
	if err != nil {
		got = "!" + err.Error()
	}
	// Length-prefixed, so no two lists of references hash alike.
	var n [binary.MaxVarintLen64]byte
	for _, b := range [...]string{s.ref, got} {
		p.secrets.Write(binary.AppendUvarint(n[:0], uint64(len(b))))
		p.secrets.Write([]byte(b))
	}
	if p.opt.SkipSecrets && errors.Is(err, ErrNoMasterKey) {
		p.encSkipped++
		return nil
	}
	return err
}

// masterKey reads the master key once per parse. A master key file is
// recorded with the key files, so that its directory is watched too.
func (p *parser) masterKey() (*MasterKey, error) {
	if !p.master.read {
		p.master.read = true
		p.master.key, p.master.err = LoadMasterKey(p.opt.LookupEnv, MasterKeyEnv)
		if f, ok := p.opt.LookupEnv(MasterKeyEnv + "_FILE"); ok && f != "" {
			if abs, err := filepath.Abs(f); err == nil {
				p.resolved.files = append(p.resolved.files, abs)
			}
		}
	}
	return p.master.key, p.master.err
}
