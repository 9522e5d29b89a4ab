package main

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCPUList(t *testing.T) {
	for _, c := range []struct {
		cpus []int
		want string
	}{
		{[]int{1}, "CPU 1"},
		{[]int{1, 2, 3}, "CPUs 1-3"},
		{[]int{1, 3}, "CPUs 1,3"},
		{[]int{1, 2, 4, 6, 7}, "CPUs 1-2,4,6-7"},
	} {
		if got := cpuList(c.cpus); got != c.want {
			t.Errorf("cpuList(%v) = %q, want %q", c.cpus, got, c.want)
		}
	}
}

// TestPin runs pin in a process of its own (it moves every thread of the
// process) and checks that a child started after it gets the servers'
// CPUs and the tool's other threads the first CPU only.
func TestPin(t *testing.T) {
	if os.Getenv("BENCH_PIN_HELPER") == "1" {
		pinHelper()
		return
	}
	if runtime.NumCPU() < 2 {
		t.Skip("-pin needs at least 2 CPUs")
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestPin$")
	cmd.Env = append(os.Environ(), "BENCH_PIN_HELPER=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	lines := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			lines[k] = v
		}
	}
	cpus := expandList(t, lines["allowed"])
	first := strconv.Itoa(cpus[0])
	rest := strings.TrimPrefix(strings.TrimPrefix(cpuList(cpus[1:]), "CPUs "), "CPU ")
	if lines["child"] != rest {
		t.Errorf("child allowed on %q, want %q\n%s", lines["child"], rest, out)
	}
	if want := "load generator pinned to CPU " + first + ", servers to " + cpuList(cpus[1:]); lines["desc"] != want {
		t.Errorf("pin says %q, want %q", lines["desc"], want)
	}
	if lines["others"] == "" {
		t.Errorf("no other thread of the tool was seen\n%s", out)
	}
	for _, l := range strings.Fields(lines["others"]) {
		if l != first {
			t.Errorf("a thread of the tool is allowed on %q, want %q only\n%s", l, first, out)
		}
	}
}

// expandList reads a kernel CPU list such as "0-1,3".
func expandList(t *testing.T, list string) []int {
	var cpus []int
	for _, r := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(r, "-")
		a, err := strconv.Atoi(lo)
		b := a
		if err == nil && isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil {
			t.Fatalf("CPU list %q: %v", list, err)
		}
		for c := a; c <= b; c++ {
			cpus = append(cpus, c)
		}
	}
	return cpus
}

// pinHelper pins as the tool does from its main goroutine, starts a
// child, and prints what each was allowed.
func pinHelper() {
	runtime.LockOSThread()
	allowed := cpusAllowed("/proc/self/status")
	desc, err := pin()
	if err != nil {
		println("pin:", err.Error())
		os.Exit(1)
	}
	child := exec.Command("sleep", "2")
	if err := child.Start(); err != nil {
		println("child:", err.Error())
		os.Exit(1)
	}
	defer child.Process.Kill()
	self := strconv.Itoa(unix.Gettid())
	var others []string
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		if task.Name() != self {
			others = append(others, cpusAllowed("/proc/self/task/"+task.Name()+"/status"))
		}
	}
	os.Stdout.WriteString("desc=" + desc + "\nallowed=" + allowed + "\nchild=" +
		cpusAllowed("/proc/"+itoa(child.Process.Pid)+"/status") + "\nothers=" + strings.Join(others, " ") + "\n")
}

func cpusAllowed(status string) string {
	b, _ := os.ReadFile(status)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
