package engine

import (
	"bytes"
	"compress/gzip"
	"io"
	"regexp"
	"strings"
	"testing"
)

// TestStatusPageServed checks what the page's files are served with: the
// type, a policy that lets no inline or foreign script run, caching that
// revalidates, gzip when asked, and 304 for an unchanged file.
func TestStatusPageServed(t *testing.T) {
	g := newFakeGateway(t, fakeYAML([]fakeProv{{name: "p1"}}, "auth:\n  keys: [{name: ml, key: \"${GW_ML}\"}]\n"), newFakeNet(t))
	for _, c := range []struct{ path, ctype, marker string }{
		{"/", "text/html; charset=utf-8", `<script src="/status/app.js"`},
		{"/status", "text/html; charset=utf-8", `<script src="/status/app.js"`},
		{"/status/", "text/html; charset=utf-8", `<script src="/status/app.js"`},
		{"/status/app.js", "text/javascript; charset=utf-8", "sessionStorage"},
		{"/status/app.css", "text/css; charset=utf-8", ".badge"},
	} {
		// No key: the page itself is public; its data is not.
		r := g.do("GET", c.path, "")
		if r.status != 200 || r.get("Content-Type") != c.ctype || !strings.Contains(string(r.body), c.marker) {
			t.Errorf("GET %s: %d %q, body has %q: %v", c.path, r.status, r.get("Content-Type"), c.marker, strings.Contains(string(r.body), c.marker))
		}
		csp := r.get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: Content-Security-Policy %q lacks %q", c.path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") || strings.Contains(csp, "http") {
			t.Errorf("GET %s: Content-Security-Policy %q lets in inline or foreign code", c.path, csp)
		}
		if r.get("X-Content-Type-Options") != "nosniff" || r.get("Cache-Control") != "no-cache" || r.get("Referrer-Policy") != "no-referrer" {
			t.Errorf("GET %s: headers\n%s", c.path, r.header)
		}
		etag := r.get("ETag")
		if again := g.do("GET", c.path, "", "If-None-Match", etag); etag == "" || again.status != 304 || len(again.body) != 0 {
			t.Errorf("GET %s with If-None-Match %s: %d, %d bytes", c.path, etag, again.status, len(again.body))
		}
		z := g.do("GET", c.path, "", "Accept-Encoding", "gzip, br")
		if z.get("Content-Encoding") != "gzip" || z.get("Vary") != "Accept-Encoding" {
			t.Fatalf("GET %s accepting gzip:\n%s", c.path, z.header)
		}
		zr, err := gzip.NewReader(bytes.NewReader(z.body))
		if err != nil {
			t.Fatal(err)
		}
		if plain, err := io.ReadAll(zr); err != nil || !bytes.Equal(plain, r.body) {
			t.Errorf("GET %s: gzipped body differs from the plain one (%v)", c.path, err)
		}
	}
	if r := g.do("GET", "/status/other.js", ""); r.status != 404 {
		t.Errorf("GET /status/other.js: %d", r.status)
	}
	if r := g.do("POST", "/", "x"); r.status != 405 || r.get("Allow") != "GET, HEAD" {
		t.Errorf("POST /: %d, Allow %q", r.status, r.get("Allow"))
	}
	if r := g.do("HEAD", "/status/app.js", ""); r.status != 200 || len(r.body) != 0 || r.get("Content-Length") == "0" {
		t.Errorf("HEAD /status/app.js: %d, %d bytes, Content-Length %q", r.status, len(r.body), r.get("Content-Length"))
	}
}

// inlineCode finds what the page's policy would refuse or what would run
// server data as code: inline script, event attributes, inline style,
// innerHTML and its kin, eval, and any URL of another origin.
var inlineCode = regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>\s*[^<\s]|\son[a-z]+\s*=|\sstyle\s*=|innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|https?://[a-z]`)

// TestStatusPageHasNoInlineCode keeps the page within its policy and its
// DOM building to text nodes.
func TestStatusPageHasNoInlineCode(t *testing.T) {
	for _, name := range []string{"index.html", "app.js", "app.css"} {
		b, err := webFiles.ReadFile("web/" + name)
		if err != nil {
			t.Fatal(err)
		}
		// The SVG namespace is a name, not a URL the page fetches.
		text := strings.ReplaceAll(string(b), "'http://www.w3.org/2000/svg'", "")
		if m := inlineCode.FindString(text); m != "" {
			t.Errorf("%s holds %q", name, m)
		}
		if strings.Contains(text, "localStorage") || strings.Contains(text, "document.cookie") {
			t.Errorf("%s keeps state outside sessionStorage", name)
		}
	}
}

// pageBudget bounds the page's weight, gzipped, as served: it is loaded
// on every visit and must stay small.
const pageBudget = 16 << 10

func TestStatusPageWeight(t *testing.T) {
	var plain, gz int
	for _, p := range []string{"/", "/status/app.js", "/status/app.css"} {
		plain += len(pageFiles[p].body)
		gz += len(pageFiles[p].gz())
	}
	t.Logf("status page: %d bytes, %d gzipped", plain, gz)
	if gz > pageBudget {
		t.Errorf("status page weighs %d bytes gzipped, over its budget of %d", gz, pageBudget)
	}
}
