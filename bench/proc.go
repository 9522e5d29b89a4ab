package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// procStat is what the load tool reads of a process from /proc.
type procStat struct {
	// CPUTicks is utime+stime in clock ticks.
	CPUTicks int64
}

// parseStat reads utime and stime (fields 14 and 15) from one line of
// /proc/PID/stat. The command name, field 2, is in parentheses and may
// itself hold spaces and parentheses, so fields are counted from the last
// ')'.
func parseStat(line string) (procStat, error) {
	end := strings.LastIndexByte(line, ')')
	if end < 0 {
		return procStat{}, errors.New("no ')' closing the command name")
	}
	f := strings.Fields(line[end+1:])
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("only %d fields after the command name", len(f))
	}
	utime, err := strconv.ParseInt(f[14-3], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("utime: %w", err)
	}
	stime, err := strconv.ParseInt(f[15-3], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("stime: %w", err)
	}
	return procStat{CPUTicks: utime + stime}, nil
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseStat(string(b))
}

// rss is a process's resident memory, in bytes: all of it (VmRSS), and
// its anonymous (heap, stacks) and file-backed (the binary's and
// libraries' pages) parts. File-backed pages are shared with the page
// cache, and the kernel maps them 64 KiB around each page a process
// touches, so a larger binary shows more of them.
type rss struct {
	total, anon, file int64
}

// String gives the total and its split, in MB.
func (r rss) String() string {
	return fmt.Sprintf("%.1f MB (anon %.1f, file %.1f)", mb(r.total), mb(r.anon), mb(r.file))
}

// parseRSS reads VmRSS, RssAnon and RssFile from the text of
// /proc/PID/status; VmRSS must be there.
func parseRSS(status string) (rss, error) {
	var r rss
	found := false
	for line := range strings.Lines(status) {
		name, rest, _ := strings.Cut(line, ":")
		var v *int64
		switch name {
		case "VmRSS":
			v, found = &r.total, true
		case "RssAnon":
			v = &r.anon
		case "RssFile":
			v = &r.file
		default:
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return rss{}, fmt.Errorf("unexpected %s line %q", name, strings.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return rss{}, fmt.Errorf("%s: %w", name, err)
		}
		*v = kb << 10
	}
	if !found {
		return rss{}, errors.New("no VmRSS line (is the process a zombie?)")
	}
	return r, nil
}

func readRSS(pid int) (rss, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return rss{}, err
	}
	return parseRSS(string(b))
}

// countFDs is how many file descriptors (mostly sockets) pid holds open.
func countFDs(pid int) int {
	es, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return -1
	}
	return len(es)
}

// parseSystemBusy reads, from the first line of /proc/stat, the clock
// ticks all CPUs spent running tasks or stolen by the hypervisor: user,
// nice, system and steal. Interrupt time is left out: the kernel may
// charge it to no task (loopback traffic is mostly softirq work), so
// comparing it with the run's own processes would count it as noise.
func parseSystemBusy(stat string) (int64, error) {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, fmt.Errorf("unexpected first line %q", line)
	}
	var busy int64
	for i, v := range f[1:] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("field %d: %w", i+2, err)
		}
		// user nice system idle iowait irq softirq steal guest guest_nice;
		// guest time is already counted in user and nice.
		switch i {
		case 0, 1, 2, 7:
			busy += n
		}
	}
	return busy, nil
}

func readSystemBusy() int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	n, _ := parseSystemBusy(string(b))
	return n
}

// atClkTck is the auxiliary vector entry holding sysconf(_SC_CLK_TCK).
const atClkTck = 17

// parseAuxvClkTck finds AT_CLKTCK in the bytes of /proc/self/auxv: pairs
// of native-endian words, ending with AT_NULL.
func parseAuxvClkTck(auxv []byte, wordSize int, order binary.ByteOrder) (int64, bool) {
	word := func(b []byte) uint64 {
		if wordSize == 4 {
			return uint64(order.Uint32(b))
		}
		return order.Uint64(b)
	}
	for i := 0; i+2*wordSize <= len(auxv); i += 2 * wordSize {
		k, v := word(auxv[i:]), word(auxv[i+wordSize:])
		if k == 0 {
			break
		}
		if k == atClkTck && v > 0 {
			return int64(v), true
		}
	}
	return 0, false
}

// clockTicks is the kernel's USER_HZ, the unit of utime and stime: what
// `getconf CLK_TCK` prints, read from the auxiliary vector the kernel hands
// every process (no cgo needed). It is 100 on every mainstream Linux.
func clockTicks() int64 {
	if b, err := os.ReadFile("/proc/self/auxv"); err == nil {
		if hz, ok := parseAuxvClkTck(b, 8, binary.NativeEndian); ok {
			return hz
		}
	}
	return 100
}

// hz is clockTicks(), read once.
var hz = clockTicks()

// ticksToDuration converts clock ticks to time.
func ticksToDuration(ticks, hz int64) time.Duration {
	return time.Duration(ticks * int64(time.Second) / hz)
}

// cpuModel names the machine's CPU for the report.
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range bytes.Lines(b) {
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && string(bytes.TrimSpace(k)) == "model name" {
			return string(bytes.TrimSpace(v))
		}
	}
	return "unknown CPU"
}

func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}
