package main

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"gateway/config"
)

// imageFacts is what the Dockerfile promises, read from it so that the
// examples and the image test check the file itself.
type imageFacts struct {
	binary, config, listen string
}

func readDockerfile(t *testing.T) imageFacts {
	t.Helper()
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	// Comments may mention other values.
	b = regexp.MustCompile(`(?m)^\s*#.*\n`).ReplaceAll(b, nil)
	find := func(re string) string {
		m := regexp.MustCompile(re).FindSubmatch(b)
		if m == nil {
			t.Fatalf("the Dockerfile has no %s", re)
		}
		return string(m[1])
	}
	return imageFacts{
		binary: find(`(?m)^COPY dist/gateway (\S+)$`),
		config: find(`GATEWAY_CONFIG=(\S+)`),
		listen: find(`GATEWAY_LISTEN=(\S+)`),
	}
}

// The parts of the Kubernetes objects the example must get right.
type (
	k8sObject struct {
		Metadata struct{ Name string }
		Data     map[string]string
		// StringData is a Secret's.
		StringData map[string]string `yaml:"stringData"`
		Spec       struct {
			Template struct{ Spec k8sPod }
		}
	}
	k8sPod struct {
		InitContainers []k8sContainer `yaml:"initContainers"`
		Containers     []k8sContainer
		Volumes        []struct {
			Name      string
			ConfigMap *struct{ Name string } `yaml:"configMap"`
			Secret    *struct {
				SecretName string `yaml:"secretName"`
			}
		}
	}
	k8sProbe struct {
		Exec struct{ Command []string }
	}
	k8sContainer struct {
		Name string
		Env  []struct{ Name, Value string }
		// VolumeMounts are the container's mounts.
		VolumeMounts []struct {
			Name      string
			MountPath string `yaml:"mountPath"`
		} `yaml:"volumeMounts"`
		StartupProbe    *k8sProbe `yaml:"startupProbe"`
		ReadinessProbe  *k8sProbe `yaml:"readinessProbe"`
		LivenessProbe   *k8sProbe `yaml:"livenessProbe"`
		SecurityContext struct {
			RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
			RunAsUser                int   `yaml:"runAsUser"`
			AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
			ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
			Capabilities             struct{ Drop []string }
		} `yaml:"securityContext"`
	}
)

func readK8s(t *testing.T, name string) k8sObject {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("examples", "kubernetes", name))
	if err != nil {
		t.Fatal(err)
	}
	var o k8sObject
	if err := yaml.Unmarshal(b, &o); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return o
}

// TestContainerExamples checks that the container's and the sidecar's
// configs load the way the image and the Deployment serve them, and that
// the Kubernetes objects fit together: the mounts are where the config and
// its key references point, the probes run the image's binary, and the
// gateway runs locked down.
func TestContainerExamples(t *testing.T) {
	img := readDockerfile(t)
	if _, err := config.Load("examples/container/gateway.yaml", config.Options{SkipSecrets: true, Listen: img.listen}); err != nil {
		t.Errorf("examples/container/gateway.yaml as the image serves it (listen %s):\n%v", img.listen, err)
	}

	cm, secret, dep := readK8s(t, "configmap.yaml"), readK8s(t, "secret.yaml"), readK8s(t, "deployment.yaml")
	pod := dep.Spec.Template.Spec
	i := slices.IndexFunc(pod.InitContainers, func(c k8sContainer) bool { return c.Name == "gateway" })
	if i < 0 {
		t.Fatal("deployment.yaml: no gateway sidecar")
	}
	gw := pod.InitContainers[i]

	listen, configFile := img.listen, img.config
	for _, e := range gw.Env {
		switch e.Name {
		case envListen:
			listen = e.Value
		case envConfig:
			configFile = e.Value
		}
	}
	mounts := map[string]string{} // volume name -> mount path
	for _, m := range gw.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	var configDir, keysDir string
	for _, v := range pod.Volumes {
		switch {
		case v.ConfigMap != nil && v.ConfigMap.Name == cm.Metadata.Name:
			configDir = mounts[v.Name]
		case v.Secret != nil && v.Secret.SecretName == secret.Metadata.Name:
			keysDir = mounts[v.Name]
		}
	}
	if configDir == "" || keysDir == "" {
		t.Fatalf("the sidecar mounts the ConfigMap at %q and the Secret at %q", configDir, keysDir)
	}
	data, ok := cm.Data[path.Base(configFile)]
	if !ok || path.Dir(configFile) != configDir {
		t.Fatalf("the gateway reads %s; the ConfigMap, mounted on %s, holds %v", configFile, configDir, cm.Data)
	}
	cfg, err := config.Parse([]byte(data), config.Options{SkipSecrets: true, Listen: listen})
	if err != nil {
		t.Fatalf("configmap.yaml's gateway.yaml with listen %s:\n%v", listen, err)
	}
	refs := 0
	for name, p := range cfg.Providers {
		for _, k := range p.Keys {
			f, ok := strings.CutPrefix(k.Ref(), "file:")
			if !ok || path.Dir(f) != keysDir || secret.StringData[path.Base(f)] == "" {
				t.Errorf("provider %s: key %s is not a file of the Secret mounted on %s", name, k.Ref(), keysDir)
			}
			refs++
		}
	}
	if refs == 0 {
		t.Error("the sidecar's config reads no key from the Secret")
	}
	// The reason the sidecar listens on loopback: auth is off.
	if _, err := config.Parse([]byte(data), config.Options{SkipSecrets: true, Listen: img.listen}); err == nil {
		t.Errorf("the sidecar's config has auth off, yet loads on %s", img.listen)
	}

	for name, p := range map[string]*k8sProbe{"startup": gw.StartupProbe, "readiness": gw.ReadinessProbe, "liveness": gw.LivenessProbe} {
		if p == nil || len(p.Exec.Command) < 2 || p.Exec.Command[0] != img.binary || p.Exec.Command[1] != "health" {
			t.Errorf("the %s probe is %+v, want exec %s health", name, p, img.binary)
		}
	}
	sc := gw.SecurityContext
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == 0 || sc.AllowPrivilegeEscalation == nil ||
		*sc.AllowPrivilegeEscalation || !sc.ReadOnlyRootFilesystem || !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("the sidecar is not locked down: %+v", sc)
	}
}

// podman runs podman and fails the test when it fails. Containers are
// never run: only built, created, copied from and inspected.
func podman(t *testing.T, args ...string) []byte {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command("podman", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// TestContainerImage builds the binary with the documented command and the
// image from the Dockerfile, checks what the image declares, takes the
// binary back out of it and serves the container example with it, as the
// image's environment says, then asks it with `gateway health`.
func TestContainerImage(t *testing.T) {
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("podman is not installed (apt-get install podman): the container image is not built")
	}
	if testing.Short() {
		t.Skip("-short: building the binary and the image takes a while")
	}
	img := readDockerfile(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "dist", "gateway")
	// The Dockerfile's command: CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o dist/gateway .
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// The context is the binary alone, as .dockerignore makes it of the repo.
	// Unique: other test runs on the machine share podman's storage.
	tag := fmt.Sprintf("localhost/gateway-test:%d-%d", os.Getpid(), time.Now().UnixNano())
	podman(t, "build", "--format", "docker", "--layers=false", "-q", "-f", "Dockerfile", "-t", tag, dir)
	t.Cleanup(func() { _ = exec.Command("podman", "rmi", "-f", tag).Run() })

	var inspect []struct {
		Size   int64
		Config struct {
			User         string
			ExposedPorts map[string]struct{}
			Env          []string
			Entrypoint   []string
			Cmd          []string
		}
		Healthcheck *struct{ Test []string }
		RootFS      struct{ Layers []string }
	}
	if err := json.Unmarshal(podman(t, "image", "inspect", tag), &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("podman image inspect: %v", err)
	}
	im := inspect[0]
	if im.Config.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532", im.Config.User)
	}
	if _, ok := im.Config.ExposedPorts["8080/tcp"]; !ok || len(im.Config.ExposedPorts) != 1 {
		t.Errorf("exposed ports %v, want 8080/tcp", im.Config.ExposedPorts)
	}
	for _, e := range []string{envConfig + "=/etc/gateway/gateway.yaml", envListen + "=0.0.0.0:8080"} {
		if !slices.Contains(im.Config.Env, e) {
			t.Errorf("env %q lacks %s", im.Config.Env, e)
		}
	}
	if !slices.Equal(im.Config.Entrypoint, []string{img.binary}) || !slices.Equal(im.Config.Cmd, []string{"serve"}) {
		t.Errorf("entrypoint %q, cmd %q", im.Config.Entrypoint, im.Config.Cmd)
	}
	if im.Healthcheck == nil || len(im.Healthcheck.Test) < 3 || im.Healthcheck.Test[0] != "CMD" ||
		im.Healthcheck.Test[1] != img.binary || im.Healthcheck.Test[2] != "health" {
		t.Errorf("healthcheck %+v, want CMD %s health", im.Healthcheck, img.binary)
	}
	if len(im.RootFS.Layers) != 1 {
		t.Errorf("%d layers, want the binary's alone", len(im.RootFS.Layers))
	}
	t.Logf("image %s: %.1f MB, one layer", tag, float64(im.Size)/1e6)

	id := strings.TrimSpace(string(podman(t, "create", "--no-healthcheck", tag)))
	t.Cleanup(func() { _ = exec.Command("podman", "rm", "-f", id).Run() })
	out := filepath.Join(dir, "out", "gateway")
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	podman(t, "cp", id+":"+img.binary, out)
	want, _ := os.ReadFile(bin)
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the image's binary is not the one built (%v)", err)
	}
	checkStatic(t, out)

	example, err := filepath.Abs("examples/container/gateway.yaml")
	if err != nil {
		t.Fatal(err)
	}
	port := strings.TrimPrefix(freeAddr(t), "127.0.0.1:")
	// The image's environment, on a free port, with no provider key set:
	// groq is left out and the mock answers, with no network.
	env := []string{envConfig + "=" + example, envListen + "=0.0.0.0:" + port, "GATEWAY_KEY=test-gateway-key"}
	gateway := func(args ...string) *exec.Cmd {
		c := exec.Command(out, args...)
		c.Env = env
		return c
	}
	if b, err := gateway("validate", example).CombinedOutput(); err != nil {
		t.Fatalf("gateway validate: %v\n%s", err, b)
	}
	srv := gateway()
	var logs bytes.Buffer
	srv.Stderr = &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = srv.Process.Signal(syscall.SIGTERM)
		_ = srv.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := gateway("health").Output()
		if err == nil {
			if want := "ok: http://127.0.0.1:" + port + "/health: version devel\n"; string(b) != want {
				t.Errorf("gateway health said %q, want %q", b, want)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway health never passed: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	chat := func(key string) *http.Response {
		req, _ := http.NewRequest("POST", "http://127.0.0.1:"+port+"/v1/chat/completions",
			strings.NewReader(`{"model":"auto","messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := chat("test-gateway-key"); r.StatusCode != 200 || r.Header.Get("X-Routed-Via") != "mock/echo" {
		t.Errorf("with the gateway key: %d via %q", r.StatusCode, r.Header.Get("X-Routed-Via"))
	}
	if r := chat(""); r.StatusCode != 401 {
		t.Errorf("without a key: %d, want 401", r.StatusCode)
	}
}

// checkStatic fails the test unless the binary at p needs no dynamic
// loader (a scratch image has none) and embeds the fallback CA roots (a
// scratch image has no /etc/ssl).
func checkStatic(t *testing.T, p string) {
	t.Helper()
	f, err := elf.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Error("the binary is dynamically linked: it cannot run FROM scratch")
		}
	}
	bi, err := buildinfo.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(bi.Deps, func(m *debug.Module) bool { return m.Path == "golang.org/x/crypto/x509roots/fallback" }) {
		t.Error("the binary does not embed the fallback CA roots")
	}
}
