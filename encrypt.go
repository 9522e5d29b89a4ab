package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gateway/config"
)

// maxSecret bounds what `gateway encrypt` reads on stdin: provider keys
// are a few hundred bytes at most.
const maxSecret = 64 << 10

// encrypt seals the secret read on stdin with the master key and prints
// its `enc:v1:` reference; with -rekey FILE it reseals every `enc:v1:`
// value of FILE from the old master key to the new one instead.
func encrypt(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("encrypt", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	rekey := fs.String("rekey", "", "reseal every enc:v1: value of this file from "+config.MasterKeyEnv+"_OLD to "+config.MasterKeyEnv)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		return usageError(stderr, "unexpected argument %q", fs.Arg(0))
	}
	key, err := config.LoadMasterKey(nil, config.MasterKeyEnv)
	if err != nil {
		fmt.Fprintln(stderr, "gateway encrypt:", err)
		return 1
	}
	if *rekey != "" {
		old, err := config.LoadMasterKey(nil, config.MasterKeyEnv+"_OLD")
		if err != nil {
			fmt.Fprintln(stderr, "gateway encrypt -rekey:", err)
			return 1
		}
		n, err := rekeyFile(*rekey, old, key)
		if err != nil {
			fmt.Fprintf(stderr, "gateway encrypt -rekey: %v; the file is unchanged\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: %d enc:v1: values resealed under %s\n", *rekey, n, config.MasterKeyEnv)
		return 0
	}
	secret, err := readSecret(stdin)
	if err != nil {
		fmt.Fprintln(stderr, "gateway encrypt:", err)
		return 1
	}
	ref, err := key.Encrypt(secret)
	if err != nil {
		fmt.Fprintln(stderr, "gateway encrypt:", err)
		return 1
	}
	fmt.Fprintln(stdout, ref)
	return 0
}

// readSecret reads the secret on r; one trailing newline (\n or \r\n),
// which echo and a terminal add, is not part of it.
func readSecret(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxSecret+1))
	if err != nil {
		return "", fmt.Errorf("reading the secret on stdin: %w", err)
	}
	if len(b) > maxSecret {
		return "", fmt.Errorf("the secret on stdin is longer than %d bytes", maxSecret)
	}
	s := string(b)
	if t, ok := strings.CutSuffix(s, "\n"); ok {
		s = strings.TrimSuffix(t, "\r")
	}
	if s == "" {
		return "", errors.New("the secret on stdin is empty")
	}
	return s, nil
}

// rekeyFile reseals every `enc:v1:` value of path from one master key to
// another and replaces the file in one rename, keeping its mode: a reader
// sees the old file or the new one, never a mix. It returns how many
// values it resealed; with none, the file is left alone.
func rekeyFile(path string, from, to *config.MasterKey) (int, error) {
	// Through a symlink (a Kubernetes-style mount), the file it points at
	// is replaced, not the link.
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return 0, err
	}
	info, err := os.Stat(real)
	if err != nil {
		return 0, err
	}
	data, err := os.ReadFile(real)
	if err != nil {
		return 0, err
	}
	out, n, err := config.Rekey(data, from, to)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	if n == 0 {
		return 0, nil
	}
	return n, replaceFile(real, out, info.Mode().Perm())
}

// replaceFile writes data to a temporary file beside path, then renames it
// over path.
func replaceFile(path string, data []byte, perm os.FileMode) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".rekey-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Chmod(perm); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	// The rename lasts a crash once the directory is synced too.
	if d, derr := os.Open(filepath.Dir(path)); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
