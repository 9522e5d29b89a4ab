package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"gateway/config"
	"gateway/internal/leaktest"
)

// noLeak fails the test when an output holds the plain key, a master key,
// or any 12 characters of a sealed value's base64.
func noLeak(t *testing.T, what, out string, sealed ...string) {
	t.Helper()
	if s := leaktest.Find(out, leaktest.Secrets, sealed); s != "" {
		t.Errorf("%s leaks %.6q...:\n%s", what, s, out)
	}
}

// encrypts runs `gateway encrypt` with stdin and checks its outputs leak
// nothing but, on stdout, the reference it printed.
func encrypts(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = encrypt(args, strings.NewReader(stdin), &out, &errOut)
	noLeak(t, "stderr", errOut.String())
	if code != 0 {
		noLeak(t, "stdout", out.String())
	}
	return code, out.String(), errOut.String()
}

func opens(t *testing.T, master, ref string) string {
	t.Helper()
	k, err := config.ParseMasterKey(master, "test")
	if err != nil {
		t.Fatal(err)
	}
	got, err := k.Decrypt(ref)
	if err != nil {
		t.Fatalf("%s does not open: %v", ref, err)
	}
	return got
}

func TestEncryptCommand(t *testing.T) {
	t.Setenv("GATEWAY_MASTER_KEY", leaktest.MasterHex)
	t.Setenv("GATEWAY_MASTER_KEY_FILE", "")
	for _, c := range []struct{ stdin, want string }{
		{leaktest.PlainKey + "\n", leaktest.PlainKey},
		{leaktest.PlainKey + "\r\n", leaktest.PlainKey},
		{leaktest.PlainKey, leaktest.PlainKey},
		{leaktest.PlainKey + "\n\n", leaktest.PlainKey + "\n"}, // only one newline is the terminal's
		{" " + leaktest.PlainKey + " \n", " " + leaktest.PlainKey + " "},
	} {
		code, out, errOut := encrypts(t, c.stdin)
		if code != 0 || errOut != "" {
			t.Fatalf("encrypt %q: exit %d, stderr %q", c.stdin, code, errOut)
		}
		ref, ok := strings.CutSuffix(out, "\n")
		if !ok || !strings.HasPrefix(ref, "enc:v1:") || strings.Contains(ref, "\n") {
			t.Fatalf("stdout %q, want one enc:v1: line", out)
		}
		if got := opens(t, leaktest.MasterHex, ref); got != c.want {
			t.Errorf("encrypt %q sealed %q", c.stdin, got)
		}
	}
	for _, c := range []struct {
		name, stdin, want string
	}{
		{"empty", "", "gateway encrypt: the secret on stdin is empty"},
		{"a newline", "\n", "gateway encrypt: the secret on stdin is empty"},
		{"a CRLF", "\r\n", "gateway encrypt: the secret on stdin is empty"},
		{"too long", strings.Repeat("k", 64<<10+1), "gateway encrypt: the secret on stdin is longer than 65536 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := encrypts(t, c.stdin)
			if code != 1 || out != "" || strings.TrimSpace(errOut) != c.want {
				t.Errorf("exit %d, stdout %q, stderr %q; want 1 and %q", code, out, errOut, c.want)
			}
		})
	}
	t.Run("no master key", func(t *testing.T) {
		t.Setenv("GATEWAY_MASTER_KEY", "")
		code, out, errOut := encrypts(t, leaktest.PlainKey)
		want := "gateway encrypt: no master key: set GATEWAY_MASTER_KEY or GATEWAY_MASTER_KEY_FILE"
		if code != 1 || out != "" || strings.TrimSpace(errOut) != want {
			t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
		}
	})
	t.Run("malformed master key", func(t *testing.T) {
		t.Setenv("GATEWAY_MASTER_KEY", leaktest.MasterHex[:62]+"zz")
		code, _, errOut := encrypts(t, leaktest.PlainKey)
		want := "gateway encrypt: GATEWAY_MASTER_KEY must be 64 hex characters (32 bytes): it holds a character that is not hex"
		if code != 1 || strings.TrimSpace(errOut) != want {
			t.Errorf("exit %d, stderr %q", code, errOut)
		}
		if strings.Contains(errOut, leaktest.MasterHex[:62]) {
			t.Errorf("stderr holds the malformed master key")
		}
	})
	t.Run("master key file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "master.key")
		if err := os.WriteFile(f, []byte(leaktest.OtherHex+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("GATEWAY_MASTER_KEY", "")
		t.Setenv("GATEWAY_MASTER_KEY_FILE", f)
		code, out, _ := encrypts(t, leaktest.PlainKey)
		if code != 0 || opens(t, leaktest.OtherHex, strings.TrimSpace(out)) != leaktest.PlainKey {
			t.Errorf("exit %d with the master key from a file", code)
		}
	})
	if code, _, errOut := encrypts(t, leaktest.PlainKey, "extra"); code != 2 || !strings.Contains(errOut, `unexpected argument "extra"`) {
		t.Errorf("a stray argument: exit %d, %q", code, errOut)
	}
}

// sealedConfig writes a config holding refs sealed under master and
// returns its path and references.
func sealedConfig(t *testing.T, master string, extra string) (path string, refs []string) {
	t.Helper()
	t.Setenv("GATEWAY_MASTER_KEY", master)
	for _, s := range []string{leaktest.PlainKey, "gw-sealed-team-key"} {
		code, out, _ := encrypts(t, s)
		if code != 0 {
			t.Fatal("encrypt failed")
		}
		refs = append(refs, strings.TrimSpace(out))
	}
	path = writeConfig(t, fmt.Sprintf(`# sealed with the team's master key
auth:
  keys:
    - {name: team, key: "%s"}   # the gateway key
providers:
  up:
    type: openai
    base_url: http://127.0.0.1:9/v1
    keys: [%s]
    models: {m: {}}
%s`, refs[1], refs[0], extra))
	return path, refs
}

func TestRekeyCommand(t *testing.T) {
	t.Setenv("GATEWAY_MASTER_KEY_FILE", "")
	t.Setenv("GATEWAY_MASTER_KEY_OLD_FILE", "")
	path, refs := sealedConfig(t, leaktest.MasterHex, "")
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	t.Setenv("GATEWAY_MASTER_KEY_OLD", leaktest.MasterHex)
	t.Setenv("GATEWAY_MASTER_KEY", leaktest.OtherHex)
	code, out, errOut := encrypts(t, "", "-rekey", path)
	if code != 0 || errOut != "" || out != path+": 2 enc:v1: values resealed under GATEWAY_MASTER_KEY\n" {
		t.Fatalf("rekey: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	after, _ := os.ReadFile(path)
	got := regexp.MustCompile(`enc:v1:[A-Za-z0-9+/]+={0,2}`).FindAllString(string(after), -1)
	if len(got) != 2 || got[0] == refs[1] || got[1] == refs[0] {
		t.Fatalf("values after rekey %q", got)
	}
	if opens(t, leaktest.OtherHex, got[1]) != leaktest.PlainKey || opens(t, leaktest.OtherHex, got[0]) != "gw-sealed-team-key" {
		t.Error("rekeyed values do not open to the secrets under the new key")
	}
	if string(after) != strings.Replace(strings.Replace(string(before), refs[0], got[1], 1), refs[1], got[0], 1) {
		t.Errorf("the rest of the file changed:\n%s", after)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640", st.Mode().Perm())
	}
	if code, _, errOut := runs(t, "validate", "-secrets", path); code != 0 {
		t.Errorf("the rekeyed file does not validate under the new key: %s", errOut)
	}

	t.Run("a value the old key does not open", func(t *testing.T) {
		// The file now holds values under leaktest.OtherHex; add one under a third key.
		t.Setenv("GATEWAY_MASTER_KEY", strings.Repeat("ab", 32))
		_, third, _ := encrypts(t, "sk-third")
		mixed := string(after) + "# spare: " + strings.TrimSpace(third) + "\n"
		if err := os.WriteFile(path, []byte(mixed), 0o640); err != nil {
			t.Fatal(err)
		}
		t.Setenv("GATEWAY_MASTER_KEY_OLD", leaktest.OtherHex)
		t.Setenv("GATEWAY_MASTER_KEY", leaktest.MasterHex)
		code, out, errOut := encrypts(t, "", "-rekey", path)
		want := "gateway encrypt -rekey: " + path + ": line 11: enc: value does not decrypt with the master key (another master key, or an altered value); the file is unchanged\n"
		if code != 1 || out != "" || errOut != want {
			t.Errorf("exit %d, stdout %q, stderr %q; want 1 and %q", code, out, errOut, want)
		}
		if now, _ := os.ReadFile(path); string(now) != mixed {
			t.Error("a failed rekey changed the file")
		}
		entries, _ := os.ReadDir(filepath.Dir(path))
		if len(entries) != 1 {
			t.Errorf("a failed rekey left files behind: %v", entries)
		}
	})
	t.Run("no old master key", func(t *testing.T) {
		t.Setenv("GATEWAY_MASTER_KEY_OLD", "")
		code, _, errOut := encrypts(t, "", "-rekey", path)
		if want := "gateway encrypt -rekey: no master key: set GATEWAY_MASTER_KEY_OLD or GATEWAY_MASTER_KEY_OLD_FILE\n"; code != 1 || errOut != want {
			t.Errorf("exit %d, stderr %q", code, errOut)
		}
	})
}

func TestValidateEncryptedKeys(t *testing.T) {
	t.Setenv("GATEWAY_MASTER_KEY_FILE", "")
	path, refs := sealedConfig(t, leaktest.MasterHex, "")
	for _, c := range []struct {
		name, master string
		args         []string
		code         int
		want         string
	}{
		{"master key given", leaktest.MasterHex, nil, 0, path + ": ok"},
		{"master key given, -secrets", leaktest.MasterHex, []string{"-secrets"}, 0, path + ": ok"},
		{"no master key", "", nil, 0, path + ": warning: 2 enc: key references checked for form only: no master key to decrypt them (set GATEWAY_MASTER_KEY or GATEWAY_MASTER_KEY_FILE)"},
		{"no master key, -secrets", "", []string{"-secrets"}, 1, path + ": providers.up.keys[0]: cannot decrypt the enc: value: no master key: set GATEWAY_MASTER_KEY or GATEWAY_MASTER_KEY_FILE (line 9)"},
		{"another master key", leaktest.OtherHex, nil, 1, path + ": auth.keys[0].key: enc: value does not decrypt with the master key (another master key, or an altered value) (line 4)\n" +
			path + ": providers.up.keys[0]: enc: value does not decrypt with the master key (another master key, or an altered value) (line 9)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("GATEWAY_MASTER_KEY", c.master)
			code, out, errOut := runs(t, append(append([]string{"validate"}, c.args...), path)...)
			if code != c.code || !strings.Contains(out+errOut, c.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d and %q", code, out, errOut, c.code, c.want)
			}
			noLeak(t, "stdout", out, refs...)
			noLeak(t, "stderr", errOut, refs...)
		})
	}
}

// TestServeEncryptedKey serves a config whose provider key is sealed: the
// upstream gets the key, and neither the client (though the upstream
// echoes the key) nor the logs see it or the master key.
func TestServeEncryptedKey(t *testing.T) {
	t.Setenv("GATEWAY_MASTER_KEY_FILE", "")
	upAddr := freeAddr(t)
	var seen sync.Map
	up := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		auth := string(ctx.Request.Header.Peek("Authorization"))
		seen.Store(auth, true)
		ctx.SetContentType("application/json")
		body, _ := json.Marshal(map[string]any{"id": "c", "object": "chat.completion", "created": 1, "model": "m",
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
				"message": map[string]any{"role": "assistant", "content": "your key is " + strings.TrimPrefix(auth, "Bearer ")}}},
			"usage": map[string]any{"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
		ctx.SetBody(body)
	}}
	go func() { _ = up.ListenAndServe(upAddr) }()
	t.Cleanup(func() { _ = up.Shutdown() })

	gwAddr := freeAddr(t)
	path, refs := sealedConfig(t, leaktest.MasterHex, "")
	data, _ := os.ReadFile(path)
	data = bytes.Replace(data, []byte("http://127.0.0.1:9/v1"), []byte("http://"+upAddr+"/v1"), 1)
	data = append([]byte("listen: \""+gwAddr+"\"\nlog: {level: debug}\n"), data...)
	data = append(data, "models:\n  auto: {targets: [up/m]}\n"...)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	// The logs go to files, which the serving goroutines may share.
	stdout, stderr := logFile(t), logFile(t)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	served := make(chan error, 1)
	go func() { served <- serve(ctx, path, config.Options{}, nil, stdout, stderr) }()

	var reply string
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, _ := http.NewRequest("POST", "http://"+gwAddr+"/v1/chat/completions",
			strings.NewReader(`{"model":"auto","messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Authorization", "Bearer gw-sealed-team-key")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			reply = string(b)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway never answered: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if _, ok := seen.Load("Bearer " + leaktest.PlainKey); !ok {
		t.Errorf("the upstream never got the decrypted key")
	}
	if !strings.Contains(reply, "your key is <secret>") {
		t.Errorf("reply %q: the echoed key was not redacted", reply)
	}
	access, _ := os.ReadFile(stdout.Name())
	diag, _ := os.ReadFile(stderr.Name())
	for what, out := range map[string]string{"reply": reply, "stdout (access log)": string(access), "stderr (log)": string(diag)} {
		noLeak(t, what, out, refs...)
	}
	if !strings.Contains(string(access), "/v1/chat/completions") || !strings.Contains(string(diag), "gateway listening") {
		t.Errorf("a log is missing, so its scan saw nothing:\n%s\n%s", access, diag)
	}
}

// logFile is a file for a serving gateway's log, closed with the test.
func logFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}
