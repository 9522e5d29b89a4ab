package engine

import (
	"bytes"

	"github.com/tidwall/gjson"

	"gateway/adapters"
)

// This file finds the usage a passthrough answer reports, as it passes on
// its way to the client, and charges it to the gateway key.

// maxReportedTokens bounds each figure an upstream reports: no call uses
// more, and figures so bounded cannot overflow any sum they join.
const maxReportedTokens = 1 << 32

const (
	// maxUsageLine bounds the start of an SSE data line a read cut, kept
	// to be read for usage once the line is whole; a longer line is not
	// read.
	maxUsageLine = 1 << 20
	// maxUsageObject bounds the usage object of a JSON answer.
	maxUsageObject = 4 << 10
)

// How an answer is read for usage, by its content type.
const (
	usageNone = iota
	usageJSON
	usageSSE
)

// streamUsagePaths are where the events of each protocol's streams carry
// usage: OpenAI's last chunk, Gemini's every chunk, Anthropic's
// message_start and message_delta, Cohere's message-end, and the
// Responses API's response.completed.
var streamUsagePaths = []string{"usage", "usageMetadata", "message.usage", "delta.usage", "response.usage"}

// passUsage reads a passthrough answer for the usage it reports and
// settles the key's reservation with it when the answer ends. It reads
// the bytes the client is sent, in place: only an SSE line cut by a read,
// and a JSON answer's usage object, are copied.
type passUsage struct {
	res     settlement
	kind    uint8
	settled bool
	// prompt, output and total are the largest figures reported: streams
	// report them again as they grow (Anthropic, Gemini).
	prompt, output, total int64

	// SSE: line holds the start of a data line a read cut; skip drops the
	// rest of a line not worth keeping.
	line []byte
	skip bool

	// JSON: a scan of the answer's top level that keeps only the value of
	// a usage or usageMetadata key.
	depth             int
	inString, escaped bool
	topObject         bool // the top-level value is an object
	keyNext           bool // the next string at depth 1 is a key
	inKey             bool
	key               [len("usageMetadata")]byte
	keyLen            int // len(key)+1: the key is none of ours
	want              bool
	capturing         bool
	obj               []byte
}

// start picks how to read the answer from its Content-Type.
func (u *passUsage) start(contentType []byte) {
	const sse = "text/event-stream"
	switch {
	case len(contentType) >= len(sse) && bytes.EqualFold(contentType[:len(sse)], []byte(sse)):
		u.kind = usageSSE
	case bytes.Contains(bytes.ToLower(contentType), []byte("json")):
		u.kind = usageJSON
	}
}

// feed reads the next bytes of the answer.
func (u *passUsage) feed(p []byte) {
	switch u.kind {
	case usageSSE:
		u.feedSSE(p)
	case usageJSON:
		u.feedJSON(p)
	}
}

func (u *passUsage) feedSSE(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			u.keep(p)
			return
		}
		line := p[:i]
		if len(u.line) > 0 || u.skip {
			u.keep(line)
			line = u.line
		}
		if !u.skip {
			u.event(line)
		}
		u.line, u.skip = u.line[:0], false
		p = p[i+1:]
	}
}

// keep holds part of a line a read cut, unless the line is no data line
// or grows past maxUsageLine.
func (u *passUsage) keep(part []byte) {
	switch {
	case u.skip:
		return
	case len(u.line) == 0 && len(part) >= len("data:") && !bytes.HasPrefix(part, []byte("data:")),
		len(u.line)+len(part) > maxUsageLine:
		u.line, u.skip = u.line[:0], true
		return
	}
	if cap(u.line)-len(u.line) < len(part) {
		grown := make([]byte, len(u.line), min(maxUsageLine, 2*(len(u.line)+len(part))))
		copy(grown, u.line)
		u.line = grown
	}
	u.line = append(u.line, part...)
}

// event reads one SSE line. gjson follows a fixed path without recursing
// into what it skips, so a hostile event costs a scan, whatever its depth.
func (u *passUsage) event(line []byte) {
	data, ok := bytes.CutPrefix(line, []byte("data:"))
	if !ok || !bytes.Contains(data, []byte("usage")) {
		return
	}
	for _, path := range streamUsagePaths {
		if r := gjson.GetBytes(data, path); r.IsObject() {
			u.add(r)
		}
	}
}

// feedJSON scans a JSON answer byte by byte, without recursion, for
// top-level usage objects.
func (u *passUsage) feedJSON(p []byte) {
	for _, c := range p {
		if u.capturing {
			if len(u.obj) < cap(u.obj) {
				u.obj = append(u.obj, c)
			} else {
				// Too long for a usage object: not one.
				u.capturing = false
			}
		}
		if u.inString {
			switch {
			case u.escaped:
				u.escaped = false
			case c == '\\':
				u.escaped = true
				// No key of ours is written with escapes.
				u.keyLen = len(u.key) + 1
			case c == '"':
				u.inString = false
				if u.inKey {
					u.inKey = false
					k := string(u.key[:min(u.keyLen, len(u.key))])
					u.want = u.keyLen <= len(u.key) && (k == "usage" || k == "usageMetadata")
				}
			case u.inKey && u.keyLen < len(u.key):
				u.key[u.keyLen] = c
				u.keyLen++
			case u.inKey:
				u.keyLen = len(u.key) + 1
			}
			continue
		}
		switch c {
		case '"':
			u.inString = true
			if u.depth == 1 && u.keyNext {
				u.inKey, u.keyNext, u.keyLen = true, false, 0
			} else if u.depth == 1 {
				u.want = false
			}
		case '{', '[':
			if u.depth == 1 && u.want && c == '{' {
				if u.obj == nil {
					u.obj = make([]byte, 0, maxUsageObject)
				}
				u.obj = append(u.obj[:0], c)
				u.capturing = true
			}
			if u.depth == 1 {
				u.want = false
			}
			u.depth++
			if u.depth == 1 {
				u.topObject = c == '{'
				u.keyNext = u.topObject
			}
		case '}', ']':
			u.depth--
			if u.depth == 1 && u.capturing {
				u.capturing = false
				u.add(gjson.ParseBytes(u.obj))
			}
			if u.depth < 0 {
				// Not JSON after all.
				u.kind = usageNone
				return
			}
		case ',':
			if u.depth == 1 {
				u.keyNext, u.want = u.topObject, false
			}
		case ':', ' ', '\t', '\r', '\n':
		default:
			if u.depth == 1 {
				u.want = false
			}
		}
	}
}

// add takes the figures of one usage object, in any protocol's names.
func (u *passUsage) add(r gjson.Result) {
	u.prompt = max(u.prompt, tokensAt(r, "prompt_tokens", "input_tokens", "promptTokenCount", "tokens.input_tokens"))
	u.output = max(u.output, tokensAt(r, "completion_tokens", "output_tokens", "candidatesTokenCount", "tokens.output_tokens"))
	u.total = max(u.total, tokensAt(r, "total_tokens", "totalTokenCount"))
}

// tokensAt returns the first figure found at one of paths in r, bounded
// to [0, maxReportedTokens]; 0 when there is none.
func tokensAt(r gjson.Result, paths ...string) int64 {
	for _, p := range paths {
		v := r.Get(p)
		if !v.Exists() {
			continue
		}
		// Float, not Int: gjson's Int of an out-of-range float is
		// undefined, and may come out negative.
		f := v.Float()
		switch {
		case !(f > 0):
			return 0
		case f >= maxReportedTokens:
			return maxReportedTokens
		}
		return int64(f)
	}
	return 0
}

// completion is the output reported, or what the total says beyond the
// prompt when that is more (Gemini's thinking tokens).
func (u *passUsage) completion() int64 { return max(u.output, u.total-u.prompt) }

// done settles the key's reservation with the usage read, once, however
// the answer ended. nil does nothing.
func (u *passUsage) done() {
	if u == nil || u.settled {
		return
	}
	u.settled = true
	// An answer that reports no usage is charged none: the token
	// reserved up front is given back.
	u.res.settle(adapters.Usage{Prompt: int(u.prompt), Completion: int(u.completion()), Known: true}, nanotime())
}
