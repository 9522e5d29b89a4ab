package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gateway/internal/leaktest"
)

// TestReloadMasterKeyRotation rotates the master key the GitOps way: the
// file resealed under the new key arrives first and is refused (the old
// config keeps serving); the new master key file then arrives in its own
// directory and, watched like a key file's, brings the file in without
// SIGHUP.
func TestReloadMasterKeyRotation(t *testing.T) {
	oldHex, newHex := leaktest.MasterHex, leaktest.OtherHex
	dir, keyDir := t.TempDir(), t.TempDir()
	masterFile := filepath.Join(keyDir, "master.key")
	reloadWriteFile(t, masterFile, oldHex+"\n")
	sealed := func(hexKey, secret string) string {
		k, err := ParseMasterKey(hexKey, "test")
		if err != nil {
			t.Fatal(err)
		}
		ref, err := k.Encrypt(secret)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("providers:\n  mock:\n    type: mock\n    keys: [\"%s\"]\n    models: {m: {}}\nmodels:\n  auto: {targets: [mock/m]}\n", ref)
	}
	path := filepath.Join(dir, "gateway.yaml")
	reloadWriteFile(t, path, sealed(oldHex, "sk-sealed-SECRET-old"))
	env := func(name string) (string, bool) {
		if name == MasterKeyEnv+"_FILE" {
			return masterFile, true
		}
		return "", false
	}
	g := newReloadRigOpt(t, path, 20*time.Millisecond, Options{LookupEnv: env})
	g.start()
	if got := g.r.Status(); !got.OK {
		t.Fatalf("status %+v", got)
	}

	g.writeAtomic(sealed(newHex, "sk-sealed-SECRET-new"))
	reloadEventually(t, reloadWait, "the resealed file refused under the old master key", func() bool {
		st := g.r.Status()
		return !st.OK && len(st.Errors) == 1 && strings.Contains(st.Errors[0], "providers.mock.keys[0]: enc: value does not decrypt")
	})
	if n := g.callCount(); n != 0 {
		t.Fatalf("apply called %d times with a file that does not open", n)
	}
	reloadWriteFile(t, masterFile+".tmp", newHex+"\n")
	if err := os.Rename(masterFile+".tmp", masterFile); err != nil {
		t.Fatal(err)
	}
	g.waitKey("mock", "sk-sealed-SECRET-new")
	reloadEventually(t, reloadWait, "status OK", func() bool { return g.r.Status().OK })
	g.stop()
	if s := leaktest.Find(g.log.String(), append([]string{"SECRET"}, leaktest.Secrets...), nil); s != "" {
		t.Errorf("the log shows %.6q...:\n%s", s, g.log)
	}
}
