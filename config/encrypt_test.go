package config_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gateway/config"
	"gateway/internal/leaktest"
)

func masterKey(t *testing.T, h string) *config.MasterKey {
	t.Helper()
	k, err := config.ParseMasterKey(h, "test key")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func seal(t *testing.T, k *config.MasterKey, secret string) string {
	t.Helper()
	ref, err := k.Encrypt(secret)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// noLeak fails the test when out holds a secret: the plain key, a master
// key (in either case), or any 12 characters of a sealed value's base64.
func noLeak(t *testing.T, what, out string, sealed ...string) {
	t.Helper()
	if s := leaktest.Find(out, leaktest.Secrets, sealed); s != "" {
		t.Errorf("%s leaks %.6q...:\n%s", what, s, out)
	}
}

func TestEncryptRoundTrip(t *testing.T) {
	k := masterKey(t, leaktest.MasterHex)
	for _, secret := range []string{leaktest.PlainKey, "x", "ünïcødé key with spaces\tand tab", strings.Repeat("k", 4096)} {
		a, b := seal(t, k, secret), seal(t, k, secret)
		if a == b {
			t.Errorf("two seals of one secret are equal: the nonce is not random")
		}
		b64, ok := strings.CutPrefix(a, "enc:v1:")
		if !ok {
			t.Fatalf("reference %q lacks enc:v1:", a)
		}
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			t.Fatalf("not std padded base64: %v", err)
		}
		if len(raw) != 12+len(secret)+16 {
			t.Errorf("sealed %d bytes, want nonce 12 + %d + tag 16", len(raw), len(secret))
		}
		for _, ref := range []string{a, b, " " + a + "\n"} {
			got, err := k.Decrypt(ref)
			if err != nil || got != secret {
				t.Errorf("Decrypt = %q, %v; want the secret back", got, err)
			}
		}
	}
	if _, err := k.Encrypt(""); err == nil {
		t.Error("an empty secret was sealed")
	}
}

// TestEncryptBindsVersion shows that the "enc:v1" prefix is authenticated:
// the same key and nonce sealing without it gives a value that does not
// open.
func TestEncryptBindsVersion(t *testing.T) {
	raw, _ := hex.DecodeString(leaktest.MasterHex)
	block, _ := aes.NewCipher(raw)
	gcm, _ := cipher.NewGCM(block)
	nonce := make([]byte, 12)
	for _, aad := range [][]byte{nil, []byte("enc:v2")} {
		ref := "enc:v1:" + base64.StdEncoding.EncodeToString(gcm.Seal(nonce, nonce, []byte(leaktest.PlainKey), aad))
		if _, err := masterKey(t, leaktest.MasterHex).Decrypt(ref); err == nil {
			t.Errorf("a value sealed with associated data %q opened", aad)
		}
	}
	ref := "enc:v1:" + base64.StdEncoding.EncodeToString(gcm.Seal(nonce, nonce, []byte(leaktest.PlainKey), []byte("enc:v1")))
	if got, err := masterKey(t, leaktest.MasterHex).Decrypt(ref); err != nil || got != leaktest.PlainKey {
		t.Errorf("the reference layout did not open: %v", err)
	}
}

func TestDecryptRefuses(t *testing.T) {
	k := masterKey(t, leaktest.MasterHex)
	ref := seal(t, k, leaktest.PlainKey)
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(ref, "enc:v1:"))
	check := func(name, ref string) {
		t.Helper()
		got, err := k.Decrypt(ref)
		if err == nil {
			t.Errorf("%s: opened to %q", name, got)
			return
		}
		noLeak(t, name+" error", err.Error(), ref)
	}
	t.Run("wrong key", func(t *testing.T) {
		_, err := masterKey(t, leaktest.OtherHex).Decrypt(ref)
		if err == nil || !strings.Contains(err.Error(), "does not decrypt with the master key") {
			t.Fatalf("err = %v", err)
		}
		noLeak(t, "error", err.Error(), ref)
	})
	t.Run("each byte flipped", func(t *testing.T) {
		for i := range raw {
			for _, bit := range []byte{0x01, 0x80} {
				b := bytes.Clone(raw)
				b[i] ^= bit
				check(fmt.Sprintf("byte %d ^ %#x", i, bit), "enc:v1:"+base64.StdEncoding.EncodeToString(b))
			}
		}
	})
	t.Run("truncated", func(t *testing.T) {
		for n := range raw {
			check(fmt.Sprintf("first %d bytes", n), "enc:v1:"+base64.StdEncoding.EncodeToString(raw[:n]))
		}
		for n := range len(ref) {
			check(fmt.Sprintf("first %d characters", n), ref[:n])
		}
	})
	t.Run("malformed", func(t *testing.T) {
		for _, bad := range []string{"enc:", "enc:v1", "enc:v2:" + ref[7:], "enc:v1:!!!!", "enc:v1:" + ref[7:] + "A",
			"enc:v1:" + base64.RawStdEncoding.EncodeToString(raw) + "x"} {
			check(bad[:min(len(bad), 9)], bad)
		}
	})
}

func TestParseMasterKey(t *testing.T) {
	for _, ok := range []string{leaktest.MasterHex, strings.ToUpper(leaktest.MasterHex), " " + leaktest.MasterHex + "\r\n"} {
		if _, err := config.ParseMasterKey(ok, "K"); err != nil {
			t.Errorf("ParseMasterKey(%.8q...): %v", ok, err)
		}
	}
	for _, c := range []struct{ key, want string }{
		{leaktest.MasterHex[:63], "K must be 64 hex characters (32 bytes), got 63 characters"},
		{leaktest.MasterHex + "00", "K must be 64 hex characters (32 bytes), got 66 characters"},
		{"", "K must be 64 hex characters (32 bytes), got 0 characters"},
		{"zz" + leaktest.MasterHex[2:], "K must be 64 hex characters (32 bytes): it holds a character that is not hex"},
		{base64.StdEncoding.EncodeToString(make([]byte, 32))[:44] + strings.Repeat("=", 20), "K must be 64 hex characters (32 bytes): it holds a character that is not hex"},
	} {
		_, err := config.ParseMasterKey(c.key, "K")
		if err == nil || err.Error() != c.want {
			t.Errorf("ParseMasterKey(%d chars) = %v, want %q", len(c.key), err, c.want)
		}
	}
}

func TestLoadMasterKey(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	lf, crlf, bad := file("lf", leaktest.MasterHex+"\n"), file("crlf", leaktest.MasterHex+"\r\n"), file("bad", "not hex\n")
	ref := seal(t, masterKey(t, leaktest.MasterHex), leaktest.PlainKey)
	for _, c := range []struct {
		name string
		env  map[string]string
		want string // "" to open ref
	}{
		{"env", map[string]string{"GATEWAY_MASTER_KEY": leaktest.MasterHex}, ""},
		{"file, newline", map[string]string{"GATEWAY_MASTER_KEY_FILE": lf}, ""},
		{"file, CRLF", map[string]string{"GATEWAY_MASTER_KEY_FILE": crlf}, ""},
		{"empty env is unset", map[string]string{"GATEWAY_MASTER_KEY": "", "GATEWAY_MASTER_KEY_FILE": lf}, ""},
		{"none", nil, "no master key: set GATEWAY_MASTER_KEY or GATEWAY_MASTER_KEY_FILE"},
		{"both", map[string]string{"GATEWAY_MASTER_KEY": leaktest.MasterHex, "GATEWAY_MASTER_KEY_FILE": lf}, "both GATEWAY_MASTER_KEY and GATEWAY_MASTER_KEY_FILE are set; set one"},
		{"file missing", map[string]string{"GATEWAY_MASTER_KEY_FILE": filepath.Join(dir, "nope")}, "reading GATEWAY_MASTER_KEY_FILE " + filepath.Join(dir, "nope") + ": no such file or directory"},
		{"file malformed", map[string]string{"GATEWAY_MASTER_KEY_FILE": bad}, "GATEWAY_MASTER_KEY_FILE " + bad + " must be 64 hex characters (32 bytes), got 7 characters"},
	} {
		t.Run(c.name, func(t *testing.T) {
			k, err := config.LoadMasterKey(lookup(c.env), "GATEWAY_MASTER_KEY")
			if c.want != "" {
				if err == nil || err.Error() != c.want {
					t.Fatalf("err = %v, want %q", err, c.want)
				}
				if c.env == nil && !errors.Is(err, config.ErrNoMasterKey) {
					t.Errorf("%v does not wrap ErrNoMasterKey", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, err := k.Decrypt(ref); err != nil || got != leaktest.PlainKey {
				t.Errorf("Decrypt = %v", err)
			}
		})
	}
}

func TestRekey(t *testing.T) {
	oldK, newK := masterKey(t, leaktest.MasterHex), masterKey(t, leaktest.OtherHex)
	secrets := []string{leaktest.PlainKey, "sk-second", "gw-team"}
	refs := make([]string, len(secrets))
	for i, s := range secrets {
		refs[i] = seal(t, oldK, s)
	}
	data := fmt.Sprintf(`# keys sealed with the master key: enc:v1:... values   
auth:
  keys:
    - {name: team, key: "%s"}
providers:
  groq:
    type: groq
    keys:
      - %s   # trailing comment
      - '%s'
    models: {m: {}}
`, refs[2], refs[0], refs[1])
	out, n, err := config.Rekey([]byte(data), oldK, newK)
	if err != nil || n != 3 {
		t.Fatalf("Rekey = %d, %v; want 3 values", n, err)
	}
	got := regexp.MustCompile(`enc:v1:[A-Za-z0-9+/]+={0,2}`).FindAllString(string(out), -1)
	if len(got) != 3 {
		t.Fatalf("rekeyed file holds %d values, want 3:\n%s", len(got), out)
	}
	// The values come in file order: team's, then groq's two.
	for i, want := range []string{secrets[2], secrets[0], secrets[1]} {
		if slicesContain(refs, got[i]) {
			t.Errorf("value %d is unchanged", i)
		}
		if s, err := newK.Decrypt(got[i]); err != nil || s != want {
			t.Errorf("value %d under the new key = %v", i, err)
		}
		if _, err := oldK.Decrypt(got[i]); err == nil {
			t.Errorf("value %d still opens with the old key", i)
		}
	}
	// Everything else is byte for byte the same.
	mask := func(s string) string {
		return regexp.MustCompile(`enc:v1:[A-Za-z0-9+/]+={0,2}`).ReplaceAllString(s, "ENC")
	}
	if mask(string(out)) != mask(data) {
		t.Errorf("the rest of the file changed:\n%s\nwant:\n%s", mask(string(out)), mask(data))
	}
	// The rekeyed file loads under the new key.
	cfg, err := config.Parse(out, config.Options{LookupEnv: lookup(map[string]string{"GATEWAY_MASTER_KEY": leaktest.OtherHex})})
	if err != nil {
		t.Fatal(err)
	}
	if k := cfg.Providers["groq"].Keys[1].Reveal(); k != secrets[1] {
		t.Errorf("groq key 1 = %d bytes, want the second secret", len(k))
	}

	t.Run("a value the old key does not open", func(t *testing.T) {
		bad := strings.Replace(data, refs[1], seal(t, newK, "sk-other"), 1)
		out, n, err := config.Rekey([]byte(bad), oldK, newK)
		if err == nil || out != nil || n != 0 {
			t.Fatalf("Rekey = %d, %v, want an error and nothing", n, err)
		}
		want := "line 10: enc: value does not decrypt with the master key (another master key, or an altered value)"
		if err.Error() != want {
			t.Errorf("err = %q, want %q", err, want)
		}
		noLeak(t, "error", err.Error(), refs...)
	})
	t.Run("no values", func(t *testing.T) {
		out, n, err := config.Rekey([]byte("providers: {}\n"), oldK, newK)
		if err != nil || n != 0 || string(out) != "providers: {}\n" {
			t.Errorf("Rekey = %q, %d, %v", out, n, err)
		}
	})
}

func slicesContain(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// encConfig is a file with sealed provider and gateway keys.
func encConfig(t *testing.T, k *config.MasterKey) (data string, refs []string) {
	refs = []string{seal(t, k, leaktest.PlainKey), seal(t, k, "gw-sealed-key")}
	return fmt.Sprintf(`auth:
  keys:
    - {name: team, key: "%s"}
providers:
  groq:
    type: groq
    keys: ["${GROQ_KEY_1}", "%s"]
    models: {m: {}}
`, refs[1], refs[0]), refs
}

func TestLoadEncryptedKeys(t *testing.T) {
	k := masterKey(t, leaktest.MasterHex)
	data, refs := encConfig(t, k)
	env := func(master string) func(string) (string, bool) {
		e := map[string]string{"GROQ_KEY_1": "gsk-test-1"}
		if master != "" {
			e["GATEWAY_MASTER_KEY"] = master
		}
		return lookup(e)
	}
	cfg, err := config.Parse([]byte(data), config.Options{LookupEnv: env(leaktest.MasterHex)})
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Providers["groq"].Keys[1].Reveal(); got != leaktest.PlainKey {
		t.Errorf("the sealed provider key opened to %d bytes, want the key", len(got))
	}
	if got := cfg.Auth.Keys[0].Hash; got != sha("gw-sealed-key") {
		t.Errorf("the sealed gateway key's hash is not the key's")
	}
	noLeak(t, "%v of the config", fmt.Sprintf("%v %+v %#v %s", cfg.Providers["groq"].Keys, cfg.Providers["groq"], cfg.Auth.Keys[0].Key, cfg.Providers["groq"].Keys[1]))

	for _, c := range []struct {
		name, master string
		want         []string
	}{
		{"wrong master key", leaktest.OtherHex, []string{
			"auth.keys[0].key: enc: value does not decrypt with the master key (another master key, or an altered value) (line 3)",
			"providers.groq.keys[1]: enc: value does not decrypt with the master key (another master key, or an altered value) (line 7)"}},
		{"missing master key", "", []string{
			"auth.keys[0].key: cannot decrypt the enc: value: no master key: set GATEWAY_MASTER_KEY or GATEWAY_MASTER_KEY_FILE (line 3)",
			"providers.groq.keys[1]: cannot decrypt the enc: value: no master key: set GATEWAY_MASTER_KEY or GATEWAY_MASTER_KEY_FILE (line 7)"}},
		{"malformed master key", leaktest.MasterHex[:60], []string{
			"auth.keys[0].key: cannot decrypt the enc: value: GATEWAY_MASTER_KEY must be 64 hex characters (32 bytes), got 60 characters (line 3)",
			"providers.groq.keys[1]: cannot decrypt the enc: value: GATEWAY_MASTER_KEY must be 64 hex characters (32 bytes), got 60 characters (line 7)"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.Parse([]byte(data), config.Options{LookupEnv: env(c.master)})
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			if got := errorLines(t, err); strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
			noLeak(t, "load error", err.Error(), refs...)
			noLeak(t, "load error", err.Error(), leaktest.MasterHex[:60])
		})
	}
	t.Run("tampered", func(t *testing.T) {
		raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(refs[0], "enc:v1:"))
		raw[20] ^= 1
		tampered := strings.Replace(data, refs[0], "enc:v1:"+base64.StdEncoding.EncodeToString(raw), 1)
		_, err := config.Parse([]byte(tampered), config.Options{LookupEnv: env(leaktest.MasterHex)})
		want := "providers.groq.keys[1]: enc: value does not decrypt with the master key (another master key, or an altered value) (line 7)"
		if err == nil || err.Error() != want {
			t.Fatalf("err = %v, want %q", err, want)
		}
		cut := strings.Replace(data, refs[0], refs[0][:7+24], 1)
		_, err = config.Parse([]byte(cut), config.Options{LookupEnv: env(leaktest.MasterHex)})
		want = "providers.groq.keys[1]: enc: value is too short (cut or altered) (line 7)"
		if err == nil || err.Error() != want {
			t.Fatalf("err = %v, want %q", err, want)
		}
	})
	t.Run("an optional provider does not hide a bad value", func(t *testing.T) {
		opt := strings.Replace(data, "type: groq\n", "type: groq\n    optional: true\n", 1)
		if _, err := config.Parse([]byte(opt), config.Options{LookupEnv: env(leaktest.OtherHex)}); err == nil {
			t.Fatal("an optional provider's undecryptable key loaded")
		}
	})
	t.Run("master key file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "master.key")
		if err := os.WriteFile(f, []byte(leaktest.MasterHex+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		e := map[string]string{"GROQ_KEY_1": "g", "GATEWAY_MASTER_KEY_FILE": f}
		cfg, err := config.Parse([]byte(data), config.Options{LookupEnv: lookup(e)})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Providers["groq"].Keys[1].Reveal() != leaktest.PlainKey {
			t.Error("the key sealed under the master key file did not open")
		}
	})
}

// TestEncryptedKeysSkipSecrets is `gateway validate` without -secrets:
// sealed values are opened when the master key is given, and counted in a
// warning when it is not; a malformed one fails either way.
func TestEncryptedKeysSkipSecrets(t *testing.T) {
	data, refs := encConfig(t, masterKey(t, leaktest.MasterHex))
	parse := func(data string, env map[string]string) (*config.Config, error) {
		return config.Parse([]byte(data), config.Options{LookupEnv: lookup(env), SkipSecrets: true})
	}
	cfg, err := parse(data, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "2 enc: key references checked for form only: no master key to decrypt them (set GATEWAY_MASTER_KEY or GATEWAY_MASTER_KEY_FILE)"
	if !slicesContain(cfg.Warnings, want) {
		t.Errorf("warnings %q lack %q", cfg.Warnings, want)
	}
	if _, err := parse(data, map[string]string{"GATEWAY_MASTER_KEY": leaktest.MasterHex}); err != nil {
		t.Errorf("with the master key: %v", err)
	}
	_, err = parse(data, map[string]string{"GATEWAY_MASTER_KEY": leaktest.OtherHex})
	if err == nil || !strings.Contains(err.Error(), "providers.groq.keys[1]: enc: value does not decrypt") {
		t.Errorf("with another master key: %v", err)
	}
	_, err = parse(strings.Replace(data, refs[0], "enc:v1:$$$", 1), nil)
	if err == nil || err.Error() != "providers.groq.keys[1]: enc: value is not valid base64 (cut or altered) (line 7)" {
		t.Errorf("a malformed value with no master key: %v", err)
	}
}
