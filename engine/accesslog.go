package engine

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"gateway/adapters"
)

// accessLine is one request as the access log tells it: names, outcomes
// and numbers, never a body or a secret.
type accessLine struct {
	id, key, route, via, attempts, cache, method, path string
	status                                             int
	stream                                             bool
	latency, ttfb                                      time.Duration
	usage                                              adapters.Usage
}

// writeAccess logs one line; a nil logger means the access log is off.
func writeAccess(log *slog.Logger, l *accessLine) {
	if log == nil {
		return
	}
	attrs := [...]slog.Attr{
		slog.String("request_id", l.id),
		slog.String("method", l.method),
		slog.String("path", l.path),
		slog.String("key", l.key),
		slog.String("route", l.route),
		slog.String("routed_via", l.via),
		slog.String("attempts", l.attempts),
		slog.Int("status", l.status),
		slog.Bool("stream", l.stream),
		slog.Float64("latency_ms", float64(l.latency.Microseconds())/1000),
		slog.Float64("ttfb_ms", float64(l.ttfb.Microseconds())/1000),
		slog.Int("prompt_tokens", l.usage.Prompt),
		slog.Int("completion_tokens", l.usage.Completion),
		slog.String("cache", l.cache),
	}
	log.LogAttrs(context.Background(), slog.LevelInfo, "request", attrs[:]...)
}

// attemptsText sums up the attempts of a request: each failed one with its
// status and class, then the winner, as "p1/m#1:429 rate_limited p2/m#1:ok".
func attemptsText(fails []failedAttempt, winner *candidate) string {
	if len(fails) == 0 && winner == nil {
		return ""
	}
	var b strings.Builder
	for i, a := range fails {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(a.c.t.name)
		b.WriteByte('#')
		b.WriteString(strconv.Itoa(a.c.slot + 1))
		b.WriteByte(':')
		if a.f.Status > 0 {
			b.WriteString(strconv.Itoa(a.f.Status))
			b.WriteByte(' ')
		}
		b.WriteString(a.f.Class.String())
	}
	if winner != nil {
		if len(fails) > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(winner.t.name)
		b.WriteByte('#')
		b.WriteString(strconv.Itoa(winner.slot + 1))
		b.WriteString(":ok")
	}
	return b.String()
}
