package engine

import (
	"bytes"
	"encoding/json"
	"sync"
	"testing"
	"time"
)

func TestAppendJSONStringRoundTrips(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote\back`, "tab\tnl\ncr\r\x00\x1f", "é😀", "bad\xffutf8", "\u2028"} {
		b := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Errorf("%q encodes to invalid JSON %s: %v", s, b, err)
			continue
		}
		if want := string(bytes.ToValidUTF8([]byte(s), []byte("\ufffd"))); got != want {
			t.Errorf("%q round-trips to %q", s, got)
		}
	}
}

func TestAccessLineIsOneJSONObject(t *testing.T) {
	l := &accessLine{id: "req\"1\n", method: "POST", path: "/v1/chat/completions", key: "team", route: "default",
		via: "p/m", status: 200, latency: 1500 * time.Microsecond, ttfb: 700 * time.Microsecond}
	b := appendAccess(nil, l, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	if bytes.Count(b, []byte("\n")) != 1 || b[len(b)-1] != '\n' {
		t.Fatalf("not one line: %q", b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	for k, v := range map[string]any{"request_id": "req\"1\n", "latency_ms": 1.5, "ttfb_ms": 0.7, "status": 200.0,
		"msg": "request", "level": "INFO", "time": "2026-12-01T00:00:00Z", "attempts": ""} {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}

func TestAccessWriterFlushesOnTickAndClose(t *testing.T) {
	var out lockedBuffer
	a := newAccessWriter(&out)
	a.write(&accessLine{id: "1"})
	deadline := time.Now().Add(5 * time.Second)
	for out.Len() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if out.Len() == 0 {
		t.Fatal("the ticker never flushed")
	}
	a.write(&accessLine{id: "2"})
	a.close()
	if n := bytes.Count(out.b.Bytes(), []byte("\n")); n != 2 {
		t.Errorf("%d lines after close, want 2", n)
	}
}
