package adapters

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"

	"gateway/config"
)

// opUpstream is a fake upstream of any protocol, at up.test, that records
// what the embeddings and completions calls send.
type opUpstream struct {
	ln   *fasthttputil.InmemoryListener
	mu   sync.Mutex
	seen []opSeen
}

type opSeen struct {
	uri, auth, googKey, extra string
	body                      []byte
}

func newOpUpstream(t *testing.T, answer fasthttp.RequestHandler) *opUpstream {
	o := &opUpstream{}
	u := newUpstream(t, func(ctx *fasthttp.RequestCtx) {
		o.mu.Lock()
		o.seen = append(o.seen, opSeen{
			uri:     string(ctx.RequestURI()),
			auth:    string(ctx.Request.Header.Peek("Authorization")),
			googKey: string(ctx.Request.Header.Peek("X-Goog-Api-Key")),
			extra:   string(ctx.Request.Header.Peek("X-Extra")),
			body:    bytes.Clone(ctx.PostBody()),
		})
		o.mu.Unlock()
		answer(ctx)
	})
	o.ln = u.ln
	return o
}

func (o *opUpstream) requests() []opSeen {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.seen)
}

// opBase is each protocol's base URL at up.test, and opModel the model
// its goldens call.
var (
	opBase  = map[string]string{"openai": "http://up.test/v1", "gemini": "http://up.test/v1beta", "cohere": "http://up.test", "anthropic": "http://up.test"}
	opModel = map[string]string{"openai": "text-embedding-3-small", "gemini": "gemini-embedding-001", "cohere": "embed-v4.0", "mock": "echo", "anthropic": "claude"}
)

// newOpProvider builds the adapter of a provider of protocol, with two
// keys, served by u (nil: every dial fails), wrapped as New wraps it.
func newOpProvider(t *testing.T, protocol string, u *opUpstream) Provider {
	t.Helper()
	if protocol == "mock" {
		return testProvider(t, "providers:\n  p: {type: mock, models: {echo: {}}}\n", "p", "", nil)
	}
	yaml := `
providers:
  p:
    type: ` + protocol + `
    base_url: ` + opBase[protocol] + `
    keys: ["${K1}", "${K2}"]
    headers: {X-Extra: extra-value}
    models:
      m: {upstream: ` + opModel[protocol] + `}
`
	var ln *fasthttputil.InmemoryListener
	if u != nil {
		ln = u.ln
	}
	return testProvider(t, yaml, "p", "up.test:80", ln)
}

// opCall is the call the engine makes of a client's body for the model
// up.
func opCall(body, up string, key int) *Call {
	m := gjson.Get(body, "model")
	return &Call{
		Body: []byte(body), ModelStart: m.Index, ModelEnd: m.Index + len(m.Raw),
		Upstream: up, UpstreamJSON: []byte(`"` + up + `"`),
		Stream:        gjson.Get(body, "stream").Bool(),
		ClientUsage:   gjson.Get(body, "stream_options.include_usage").Bool(),
		StreamOptions: gjson.Get(body, "stream_options").Exists(),
		Key:           key,
	}
}

// opURI is the endpoint each protocol's embeddings go to.
var opURI = map[string]string{
	"openai": "/v1/embeddings",
	"gemini": "/v1beta/models/gemini-embedding-001:batchEmbedContents",
	"cohere": "/v2/embed",
}

// checkOpSent checks the one request an upstream got: its endpoint, the
// second key in the protocol's header, the provider's extra header.
func checkOpSent(t *testing.T, protocol, uri string, seen []opSeen) opSeen {
	t.Helper()
	if len(seen) != 1 {
		t.Fatalf("the upstream got %d requests, want 1", len(seen))
	}
	s := seen[0]
	wantAuth, wantGoog := "Bearer "+testKey2, ""
	if protocol == "gemini" {
		wantAuth, wantGoog = "", testKey2
	}
	if s.uri != uri || s.auth != wantAuth || s.googKey != wantGoog || s.extra != "extra-value" {
		t.Errorf("upstream got %s, Authorization %q, X-Goog-Api-Key %q, X-Extra %q; want %s with key 2 in the %s header",
			s.uri, s.auth, s.googKey, s.extra, uri, protocol)
	}
	return s
}

// TestEmbeddingsGolden replays testdata/embeddings/<protocol>_*.txt: the
// client's request.json must reach the upstream as upstream-request.json
// (byte for byte where it is relayed; none at all when the file has no
// such section), and upstream-response.json must come back as
// response.json, or end as "error" says. The vectors the client gets are
// the upstream's, and the usage the engine gets is the one the client
// sees, estimated where the upstream reports none. -update rewrites the
// expected sections.
func TestEmbeddingsGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/embeddings/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	for _, path := range files {
		name := strings.TrimSuffix(filepath.Base(path), ".txt")
		protocol, _, _ := strings.Cut(name, "_")
		t.Run(name, func(t *testing.T) {
			g := readGolden(t, path)
			answer := strings.TrimSpace(g.sections["upstream-response.json"])
			u := newOpUpstream(t, func(ctx *fasthttp.RequestCtx) {
				ctx.SetContentType("application/json")
				ctx.SetBodyString(answer)
			})
			p := newOpProvider(t, protocol, u)
			if !Serves[Embedder](p) {
				t.Fatalf("a %s provider does not serve embeddings", protocol)
			}
			var r Reply
			err := p.(Embedder).Embed(opCall(strings.TrimSpace(g.sections["request.json"]), opModel[protocol], 1), &r)
			end := failureText(err)
			seen := u.requests()
			if *updateGolden {
				if len(seen) == 1 {
					sent := string(seen[0].body) + "\n"
					if protocol != "openai" {
						sent = indentJSON(seen[0].body)
					}
					g.set("upstream-request.json", sent)
				}
				if err == nil {
					g.set("response.json", indentJSON(r.Body))
				}
				if end != "" {
					g.set("error", end+"\n")
				}
				g.write(t)
				return
			}
			want, sends := g.sections["upstream-request.json"]
			switch {
			case !sends && len(seen) > 0:
				t.Errorf("the upstream got %s, want no request", seen[0].body)
			case sends && protocol == "openai":
				if s := checkOpSent(t, protocol, opURI[protocol], seen); string(s.body) != strings.TrimSuffix(want, "\n") {
					t.Errorf("upstream got %s\nwant %s", s.body, want)
				}
			case sends:
				sameJSON(t, "upstream request", checkOpSent(t, protocol, opURI[protocol], seen).body, want)
			}
			if want := strings.TrimSpace(g.sections["error"]); end != want {
				t.Fatalf("ended with %q, want %q", end, want)
			}
			if err != nil {
				return
			}
			sameJSON(t, "response", r.Body, g.sections["response.json"])
			if protocol == "openai" && string(r.Body) != answer {
				t.Errorf("the answer was not relayed as it is: %s", r.Body)
			}
			if protocol == "gemini" || protocol == "cohere" {
				checkVectors(t, r.Body, answer, protocol)
			}
			estimated := map[string]bool{
				"gemini": true,
				"cohere": !gjson.Get(answer, "meta.billed_units.input_tokens").Exists(),
				"openai": !gjson.Get(answer, "usage").Exists(),
			}[protocol]
			prompt := int(gjson.GetBytes(r.Body, "usage.prompt_tokens").Int())
			if estimated {
				prompt = embedEstimate(g.sections["request.json"])
			}
			if r.Usage != (Usage{Prompt: prompt, Known: true, Estimated: estimated}) {
				t.Errorf("Usage = %+v, want %d prompt tokens, estimated %v", r.Usage, prompt, estimated)
			}
			if u := gjson.GetBytes(r.Body, "usage"); u.Exists() && (u.Get("prompt_tokens").Int() != int64(prompt) || u.Get("total_tokens").Int() != int64(prompt)) {
				t.Errorf("the client sees usage %s, the engine %+v", u.Raw, r.Usage)
			}
		})
	}
}

// embedEstimate is the usage the gateway counts for an embeddings request: a
// token for four bytes of text, rounded up, or one a token id.
func embedEstimate(body string) int {
	bytes, ids := 0, 0
	var walk func(v gjson.Result)
	walk = func(v gjson.Result) {
		switch {
		case v.Type == gjson.String:
			bytes += len(v.Str)
		case v.Type == gjson.Number:
			ids++
		default:
			v.ForEach(func(_, e gjson.Result) bool { walk(e); return true })
		}
	}
	walk(gjson.Get(body, "input"))
	return (bytes+3)/4 + ids
}

// checkVectors checks that the client's vectors, as numbers or base64,
// are the float32s of the upstream's.
func checkVectors(t *testing.T, reply []byte, answer, protocol string) {
	t.Helper()
	path := "embeddings.#.values"
	if protocol == "cohere" {
		path = "embeddings.float"
	}
	var want [][]float32
	for _, v := range gjson.Get(answer, path).Array() {
		var vec []float32
		for _, x := range v.Array() {
			vec = append(vec, float32(x.Float()))
		}
		want = append(want, vec)
	}
	var got [][]float32
	for i, d := range gjson.GetBytes(reply, "data").Array() {
		if d.Get("index").Int() != int64(i) || d.Get("object").Str != "embedding" {
			t.Errorf("data[%d] = %s", i, d.Raw)
		}
		got = append(got, decodeEmbedding(t, d.Get("embedding")))
	}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("client vectors %v, want the upstream's %v", got, want)
	}
}

// decodeEmbedding reads an embedding as OpenAI sends it: numbers, or the
// base64 of their float32s, little-endian.
func decodeEmbedding(t *testing.T, e gjson.Result) []float32 {
	t.Helper()
	var out []float32
	if e.Type != gjson.String {
		for _, x := range e.Array() {
			out = append(out, float32(x.Float()))
		}
		return out
	}
	raw, err := base64.StdEncoding.DecodeString(e.Str)
	if err != nil || len(raw)%4 != 0 {
		t.Fatalf("embedding %q is not base64 float32s: %v", e.Str, err)
	}
	for i := 0; i < len(raw); i += 4 {
		out = append(out, math.Float32frombits(binary.LittleEndian.Uint32(raw[i:])))
	}
	return out
}

// Which protocol serves which call: the engine asks Serves, and skips a
// target that cannot, without calling it. Through New's wrapper, a call
// the protocol lacks refuses as Unsupported, sending nothing; without the
// wrapper (no keys to redact), the adapter does not have the call at all.
func TestServes(t *testing.T) {
	for _, tt := range []struct {
		protocol          string
		embeds, completes bool
	}{
		{"openai", true, true},
		{"gemini", true, false},
		{"cohere", true, false},
		{"anthropic", false, false},
		{"mock", true, true},
	} {
		u := newOpUpstream(t, func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(500) })
		wrapped := newOpProvider(t, tt.protocol, u)
		bare := constructors[tt.protocol](&config.Provider{Protocol: tt.protocol}, nil)
		for _, p := range []Provider{wrapped, bare} {
			if Serves[Embedder](p) != tt.embeds || Serves[Completer](p) != tt.completes {
				t.Errorf("%s (%T): serves embeddings %v, completions %v; want %v, %v", tt.protocol, p,
					Serves[Embedder](p), Serves[Completer](p), tt.embeds, tt.completes)
			}
		}
		if _, ok := bare.(Embedder); ok != tt.embeds {
			t.Errorf("%s: the bare adapter is an Embedder: %v", tt.protocol, ok)
		}
		if _, ok := bare.(Completer); ok != tt.completes {
			t.Errorf("%s: the bare adapter is a Completer: %v", tt.protocol, ok)
		}
		body := `{"model":"m","input":"x","prompt":"x"}`
		if !tt.embeds {
			f := asTestFailure(t, wrapped.(Embedder).Embed(opCall(body, "x", 0), &Reply{}))
			if f.Class != Unsupported || f.Status != 400 || !gjson.ValidBytes(f.Body) {
				t.Errorf("%s: Embed failed with %+v, want Unsupported with a body to relay", tt.protocol, f)
			}
		}
		if !tt.completes {
			f := asTestFailure(t, wrapped.(Completer).Complete(opCall(body, "x", 0), &Reply{}))
			if f.Class != Unsupported || f.Status != 400 || !gjson.ValidBytes(f.Body) {
				t.Errorf("%s: Complete failed with %+v, want Unsupported with a body to relay", tt.protocol, f)
			}
		}
		if n := len(u.requests()); n != 0 {
			t.Errorf("%s: a call it does not serve sent %d requests", tt.protocol, n)
		}
	}
}

// Each protocol's embeddings failures are classified as its chat's are,
// and a 200 that holds no usable answer is Retryable.
func TestEmbedFailures(t *testing.T) {
	for _, tt := range []struct {
		protocol   string
		status     int
		retryAfter string
		body       string
		class      Class
		wait       time.Duration
	}{
		{"openai", 429, "7", `{"error":{"message":"Rate limit reached","type":"requests"}}`, RateLimited, 7 * time.Second},
		{"openai", 401, "", `{"error":{"message":"Incorrect API key provided: ` + testKey2 + `"}}`, Auth, 0},
		{"openai", 400, "", `{"error":{"message":"This model's maximum context length is 8192 tokens","code":"context_length_exceeded"}}`, ContextTooLong, 0},
		{"openai", 400, "", `{"error":{"message":"The model does not exist","code":"model_not_found"}}`, Unsupported, 0},
		{"openai", 400, "", `{"error":{"message":"'$.input' is invalid","code":null}}`, BadRequest, 0},
		{"openai", 503, "", `{"error":{"message":"overloaded"}}`, Retryable, 0},
		{"openai", 200, "", `not json`, Retryable, 0},
		{"openai", 200, "", `{"object":"list","model":"x"}`, Retryable, 0},
		{"openai", 200, "", `{"error":{"message":"oops"}}`, Retryable, 0},
		{"gemini", 429, "", `{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"20s"}]}}`, RateLimited, 20 * time.Second},
		{"gemini", 400, "", `{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT"}}`, Auth, 0},
		{"gemini", 400, "", `{"error":{"code":400,"message":"* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch","status":"INVALID_ARGUMENT"}}`, BadRequest, 0},
		{"gemini", 400, "", `{"error":{"code":400,"message":"models/gemini-embedding-001 is not supported for batchEmbedContents","status":"INVALID_ARGUMENT"}}`, Unsupported, 0},
		{"gemini", 404, "", `{"error":{"code":404,"message":"models/x is not found","status":"NOT_FOUND"}}`, Retryable, 0},
		{"gemini", 200, "", `{"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE"}}`, Retryable, 0},
		{"gemini", 200, "", `{"embeddings":{"values":[1]}}`, Retryable, 0},
		{"gemini", 200, "", `[1,2`, Retryable, 0},
		{"cohere", 402, "", `{"message":"please add a payment method"}`, Auth, 0},
		{"cohere", 429, "3", `{"message":"trial key rate limit"}`, RateLimited, 3 * time.Second},
		{"cohere", 400, "", `{"message":"invalid request: input_type must be one of search_document, search_query"}`, BadRequest, 0},
		{"cohere", 400, "", `{"message":"model 'embed-x' does not exist"}`, Unsupported, 0},
		{"cohere", 200, "", `{"embeddings":{"int8":[[1]]}}`, Retryable, 0},
		{"cohere", 200, "", `{"embeddings":{"float":[[1],[2]]}}`, Retryable, 0},
	} {
		u := newOpUpstream(t, func(ctx *fasthttp.RequestCtx) {
			ctx.SetStatusCode(tt.status)
			if tt.retryAfter != "" {
				ctx.Response.Header.Set("Retry-After", tt.retryAfter)
			}
			ctx.SetContentType("application/json")
			ctx.SetBodyString(tt.body)
		})
		p := newOpProvider(t, tt.protocol, u)
		r := Reply{Body: []byte("stale")}
		f := asTestFailure(t, p.(Embedder).Embed(opCall(`{"model":"m","input":["a"]}`, opModel[tt.protocol], 1), &r))
		if f.Class != tt.class || f.RetryAfter != tt.wait || strings.Contains(f.Msg+string(f.Body), testKey2) {
			t.Errorf("%s %d %s: failure %v %q (retry after %v), want %v (%v)", tt.protocol, tt.status, tt.body, f.Class, f.Msg, f.RetryAfter, tt.class, tt.wait)
		}
		if (f.Class == BadRequest || f.Class == Unsupported || f.Class == ContextTooLong) && !gjson.ValidBytes(f.Body) {
			t.Errorf("%s %s: %v with no body to relay", tt.protocol, tt.body, f.Class)
		}
		if r.Usage != (Usage{}) {
			t.Errorf("%s %s: a failure reports usage %+v", tt.protocol, tt.body, r.Usage)
		}
	}
	for _, protocol := range []string{"openai", "gemini", "cohere"} {
		f := asTestFailure(t, newOpProvider(t, protocol, nil).(Embedder).Embed(opCall(`{"model":"m","input":"a"}`, "x", 0), &Reply{}))
		if f.Class != Retryable {
			t.Errorf("%s: an unreachable upstream is %v, want retryable", protocol, f.Class)
		}
	}
}

// What an upstream echoes of a key never reaches the client, in an
// embeddings answer or a completions stream.
func TestEmbedAndCompleteAreRedacted(t *testing.T) {
	u := newOpUpstream(t, func(ctx *fasthttp.RequestCtx) {
		if strings.HasSuffix(string(ctx.Path()), "/embeddings") {
			ctx.SetBodyString(`{"object":"list","data":[],"model":"` + testKey1 + `"}`)
			return
		}
		ctx.SetContentType("text/event-stream")
		ctx.SetBodyString(`data: {"object":"text_completion","choices":[{"text":"` + testKey2 + `","index":0,"finish_reason":"stop"}]}` + "\n\ndata: [DONE]\n\n")
	})
	p := newOpProvider(t, "openai", u)
	var r Reply
	if err := p.(Embedder).Embed(opCall(`{"model":"m","input":"a"}`, "x", 0), &r); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(r.Body), testKey1) || !strings.Contains(string(r.Body), "<secret>") {
		t.Errorf("embeddings answer %s", r.Body)
	}
	r = Reply{}
	if err := p.(Completer).Complete(opCall(`{"model":"m","prompt":"a","stream":true}`, "x", 0), &r); err != nil {
		t.Fatal(err)
	}
	defer r.Stream.Close()
	f, err := r.Stream.Next()
	if err != nil || strings.Contains(string(f), testKey2) || !strings.Contains(string(f), "<secret>") {
		t.Errorf("completions frame %q, %v", f, err)
	}
}

func TestReadEmbedInput(t *testing.T) {
	for _, tt := range []struct {
		body   string
		texts  []string
		tokens bool
		base64 bool
		dims   int
		typ    string
	}{
		{body: `{"input":"hi"}`, texts: []string{"hi"}},
		{body: `{"input":" hi\u00e9 ","encoding_format":"float"}`, texts: []string{" hié "}},
		{body: `{"input":["a","",  "c"],"encoding_format":"base64","dimensions":256}`, texts: []string{"a", "", "c"}, base64: true, dims: 256},
		{body: `{"input":[1,2,3],"dimensions":4096}`, texts: []string{"[1,2,3]"}, tokens: true, dims: 4096},
		{body: `{"input":[[1,2],[3]]}`, texts: []string{"[1,2]", "[3]"}, tokens: true},
		{body: `{"input":"q","input_type":"search_query","user":"u","model":"m"}`, texts: []string{"q"}, typ: "search_query"},
	} {
		in, f := readEmbedInput([]byte(tt.body))
		if f != nil {
			t.Errorf("%s: %v", tt.body, f)
			continue
		}
		if !slices.Equal(in.texts, tt.texts) || in.tokens != tt.tokens || in.base64 != tt.base64 || in.dimensions != tt.dims || in.inputType != tt.typ {
			t.Errorf("%s: read %+v", tt.body, *in)
		}
	}
	for _, body := range []string{
		`{"input":[]}`, `{}`, `{"input":null}`, `{"input":{}}`, `{"input":["a",1]}`, `{"input":[1,"a"]}`,
		`{"input":[[1],"a"]}`, `{"input":[[]]}`, `{"input":[1.5]}`, `{"input":[[1,[2]]]}`, `{"input":"a","encoding_format":"int8"}`,
		`{"input":"a","dimensions":0}`, `{"input":"a","dimensions":4097}`, `{"input":"a","dimensions":1.5}`, `not json`,
		`{"input":"a"} x`, strings.Repeat("[", 200) + strings.Repeat("]", 200),
	} {
		if _, f := readEmbedInput([]byte(body)); f == nil || f.Class != Unsupported || !gjson.ValidBytes(f.Body) {
			t.Errorf("%s: failure %+v, want Unsupported with a body", body, f)
		}
	}
}

// The mock's embeddings: unit vectors, the same for the same input, the
// size asked for (8 by default), the same in both encodings, and bounded.
func TestMockEmbed(t *testing.T) {
	p := newTestMock(t).(Embedder)
	embed := func(body string) ([][]float32, Usage, error) {
		var r Reply
		if err := p.Embed(mockCall(body, false), &r); err != nil {
			return nil, Usage{}, err
		}
		if gjson.GetBytes(r.Body, "object").Str != "list" || gjson.GetBytes(r.Body, "model").Str != "echo" {
			t.Errorf("answer %s", r.Body)
		}
		var out [][]float32
		for _, d := range gjson.GetBytes(r.Body, "data").Array() {
			out = append(out, decodeEmbedding(t, d.Get("embedding")))
		}
		return out, r.Usage, nil
	}
	vecs, u, err := embed(`{"model":"echo","input":["hello","world","hello","a"]}`)
	if err != nil {
		t.Fatal(err)
	}
	tokens, _, err := embed(`{"model":"echo","input":[[1,2]]}`)
	if err != nil {
		t.Fatal(err)
	}
	vecs = append(vecs, tokens...)
	if len(vecs) != 5 || !slices.Equal(vecs[0], vecs[2]) || slices.Equal(vecs[0], vecs[1]) || slices.Equal(vecs[3], vecs[4]) {
		t.Errorf("vectors %v: want one per input, equal for equal inputs only", vecs)
	}
	for _, v := range vecs {
		var norm float64
		for _, x := range v {
			norm += float64(x) * float64(x)
		}
		if len(v) != mockDimensions || math.Abs(norm-1) > 1e-6 {
			t.Errorf("vector %v: want %d numbers of norm 1", v, mockDimensions)
		}
	}
	if u != (Usage{Prompt: 4, Known: true}) {
		t.Errorf("usage %+v, want a quarter of the 16 bytes, not estimated", u)
	}
	b64, _, err := embed(`{"model":"echo","input":"hello","encoding_format":"base64","dimensions":3}`)
	if err != nil {
		t.Fatal(err)
	}
	floats, _, _ := embed(`{"model":"echo","input":"hello","dimensions":3}`)
	if len(b64[0]) != 3 || !slices.Equal(b64[0], floats[0]) {
		t.Errorf("base64 %v, floats %v: want the same 3 numbers", b64, floats)
	}
	big := `{"model":"echo","input":[` + strings.Repeat(`"a",`, 300) + `"a"],"dimensions":4000}`
	if _, _, err := embed(big); asTestFailure(t, err).Class != Unsupported {
		t.Errorf("an answer of 1.2M numbers: %v, want Unsupported", err)
	}
}

// FuzzGeminiEmbeddings feeds any answer to the batchEmbedContents
// translation: it fails or makes valid JSON with one vector per input.
func FuzzGeminiEmbeddings(f *testing.F) {
	for _, s := range []string{
		`{"embeddings":[{"values":[0.1,-2e-3]},{"values":[1]}]}`, `{"embeddings":[{"values":[1e400]},{"values":[]}]}`,
		`{"error":{"code":429,"message":"x"}}`, `{"embeddings":[{"values":["1"]}]}`, `{"embeddings":null}`, `[[[`,
	} {
		f.Add([]byte(s), uint8(2), false)
		f.Add([]byte(s), uint8(2), true)
	}
	f.Fuzz(func(t *testing.T, body []byte, n uint8, b64 bool) {
		in := &embedInput{texts: make([]string, n), base64: b64}
		out, fail := geminiEmbeddings(nil, body, in, "m")
		checkEmbedAnswer(t, out, fail, int(n))
	})
}

// FuzzCohereEmbeddings does the same for Cohere's embed answers.
func FuzzCohereEmbeddings(f *testing.F) {
	for _, s := range []string{
		`{"embeddings":{"float":[[0.1,-2e-3],[1]]},"meta":{"billed_units":{"input_tokens":3}}}`,
		`{"embeddings":[[1],[2]]}`, `{"embeddings":{"float":[[1e999]]}}`, `{"meta":{"billed_units":{"input_tokens":-9e30}}}`, `{`,
	} {
		f.Add([]byte(s), uint8(2), false)
		f.Add([]byte(s), uint8(1), true)
	}
	f.Fuzz(func(t *testing.T, body []byte, n uint8, b64 bool) {
		in := &embedInput{texts: make([]string, n), base64: b64}
		out, u, fail := cohereEmbeddings(nil, body, in, "m")
		checkEmbedAnswer(t, out, fail, int(n))
		if fail == nil && (!u.Known || u != u.Bounded()) {
			t.Errorf("usage %+v", u)
		}
	})
}

// FuzzReadEmbedInput feeds any client body to the request reader: it
// refuses it or reads inputs within bounds.
func FuzzReadEmbedInput(f *testing.F) {
	for _, s := range []string{`{"input":"a"}`, `{"input":[[1],[2,3]],"dimensions":8}`, `{"input":["a","b"],"encoding_format":"base64"}`, `{"input":[1,"a"]}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		in, fail := readEmbedInput(body)
		if fail != nil {
			if fail.Class != Unsupported {
				t.Errorf("failure %+v", fail)
			}
			return
		}
		if len(in.texts) == 0 || in.dimensions < 0 || in.dimensions > maxEmbedDimensions {
			t.Errorf("read %+v", *in)
		}
	})
}

// checkEmbedAnswer checks a translation's result: a Retryable failure
// with an upstream status, or an OpenAI answer with n vectors.
func checkEmbedAnswer(t *testing.T, out []byte, fail *Failure, n int) {
	t.Helper()
	if fail != nil {
		if fail.Msg == "" || fail.Status == 0 {
			t.Errorf("failure %+v", fail)
		}
		return
	}
	if CheckJSON(out) != nil || !gjson.ValidBytes(out) {
		t.Fatalf("answer is not JSON: %s", out)
	}
	if got := gjson.GetBytes(out, "data.#").Int(); got != int64(n) {
		t.Errorf("%d vectors for %d inputs: %s", got, n, out)
	}
}
