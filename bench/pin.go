package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// pin keeps the load generator and the servers it starts off each
// other's CPUs: the tool runs on the first CPU it may use, every child
// started after on the others. On a machine this small the clients
// otherwise take CPU from the proxy under test, and how often they do
// depends on the proxy's own cost; pinned, a proxy shares its CPUs with
// the upstream only.
//
// Children inherit the affinity of the thread that forks them: the main
// thread, which the main goroutine is locked to (see init), so that
// thread gets the servers' CPUs. The runtime then creates its threads
// from a template thread rather than from the locked one, so the rest of
// the tool is moved thread by thread, in two passes to catch a thread
// created during the first. It returns how it pinned, for the report.
func pin() (string, error) {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		return "", fmt.Errorf("-pin: %w", err)
	}
	var cpus []int
	for c := 0; c < len(allowed)*64; c++ {
		if allowed.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) < 2 {
		return "", errors.New("-pin needs at least 2 CPUs")
	}
	var load, servers unix.CPUSet
	load.Set(cpus[0])
	for _, c := range cpus[1:] {
		servers.Set(c)
	}
	if err := unix.SchedSetaffinity(0, &servers); err != nil {
		return "", fmt.Errorf("-pin: %w", err)
	}
	self := unix.Gettid()
	for range 2 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return "", fmt.Errorf("-pin: %w", err)
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil || tid == self {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &load); err != nil && !errors.Is(err, unix.ESRCH) {
				return "", fmt.Errorf("-pin: thread %d: %w", tid, err)
			}
		}
	}
	return fmt.Sprintf("load generator pinned to CPU %d, servers to %s", cpus[0], cpuList(cpus[1:])), nil
}

// cpuList writes CPU numbers as a list: "1", "1-3", "1,3".
func cpuList(cpus []int) string {
	s := ""
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if s != "" {
			s += ","
		}
		s += strconv.Itoa(cpus[i])
		if j > i {
			s += "-" + strconv.Itoa(cpus[j])
		}
		i = j + 1
	}
	if len(cpus) == 1 {
		return "CPU " + s
	}
	return "CPUs " + s
}
