package engine

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/valyala/fasthttp"
)

// This file serves the status page: three files embedded in the binary,
// read once at start and gzipped once, when first asked for gzipped,
// never fetched from anywhere else. The
// page itself holds no data; it reads the JSON endpoints with the
// gateway key its user gives it.

//go:embed web
var webFiles embed.FS

// pageFile is one embedded file as it is served.
type pageFile struct {
	body []byte
	// gz returns body gzipped. It runs on the first visit, not at start:
	// the best compression takes a few MB of compressor state, which
	// would stay in the process's memory for good, on a gateway whose
	// page may never be opened.
	gz    func() []byte
	ctype string
	etag  string
}

// pageCSP lets the page load its own script, style and data and nothing
// else: no inline script, no other origin, no framing.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// pageFiles maps a request path to the file it serves.
var pageFiles = loadPage()

func loadPage() map[string]*pageFile {
	index := readPageFile("index.html", "text/html; charset=utf-8")
	return map[string]*pageFile{
		"/":               index,
		"/status":         index,
		"/status/":        index,
		"/status/app.js":  readPageFile("app.js", "text/javascript; charset=utf-8"),
		"/status/app.css": readPageFile("app.css", "text/css; charset=utf-8"),
	}
}

func readPageFile(name, ctype string) *pageFile {
	b, err := webFiles.ReadFile("web/" + name)
	if err != nil {
		panic(fmt.Sprintf("reading the embedded status page: %v", err))
	}
	sum := sha256.Sum256(b)
	return &pageFile{body: b, gz: sync.OnceValue(func() []byte { return gzipped(b) }), ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
}

func gzipped(b []byte) []byte {
	var z bytes.Buffer
	w, _ := gzip.NewWriterLevel(&z, gzip.BestCompression)
	_, _ = w.Write(b)
	_ = w.Close()
	return z.Bytes()
}

// page serves the status page's files. They are public: what the page
// shows comes from the API, which asks for a key.
func page(ctx *fasthttp.RequestCtx) {
	f := pageFiles[string(ctx.Path())]
	if f == nil {
		(&apiError{status: fasthttp.StatusNotFound, typ: "invalid_request_error", code: "unknown_path",
			msg: "no such endpoint: " + string(ctx.Path())}).write(ctx)
		return
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		methodNotAllowed(ctx, "GET, HEAD")
		return
	}
	h := &ctx.Response.Header
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	// A new binary may bring new files under the same names: the browser
	// keeps them but asks each time, and gets 304 while they are the same.
	h.Set(fasthttp.HeaderCacheControl, "no-cache")
	h.Set(fasthttp.HeaderETag, f.etag)
	h.Set(fasthttp.HeaderVary, "Accept-Encoding")
	if string(ctx.Request.Header.Peek(fasthttp.HeaderIfNoneMatch)) == f.etag {
		ctx.SetStatusCode(fasthttp.StatusNotModified)
		return
	}
	h.SetContentType(f.ctype)
	if ctx.Request.Header.HasAcceptEncoding("gzip") {
		h.Set(fasthttp.HeaderContentEncoding, "gzip")
		ctx.SetBody(f.gz())
		return
	}
	ctx.SetBody(f.body)
}
