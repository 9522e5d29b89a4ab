package adapters

import (
	"errors"
	"net"
	"testing"

	"github.com/valyala/fasthttp/fasthttputil"

	"gateway/config"
)

// testProvider loads yaml, whose ${K1} and ${K2} are testKey1 and
// testKey2, and builds the named provider's adapter on a client that
// reaches host (as "name:80") through ln and refuses everything else; a
// nil ln refuses everything.
func testProvider(t testing.TB, yaml, name, host string, ln *fasthttputil.InmemoryListener) Provider {
	t.Helper()
	env := map[string]string{"K1": testKey1, "K2": testKey2}
	cfg, err := config.Parse([]byte(yaml), config.Options{LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }})
	if err != nil {
		t.Fatal(err)
	}
	client := NewClient(cfg.Providers[name], func(addr string) (net.Conn, error) {
		if ln == nil || addr != host {
			return nil, errors.New("dial " + addr + ": connection refused")
		}
		return ln.Dial()
	})
	if client != nil {
		t.Cleanup(client.CloseIdleConnections)
	}
	p, err := New(cfg.Providers[name], client, testRedactor)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// testRedactor redacts testKey1 and testKey2, as a config holding them
// would.
var testRedactor = NewRedactor([]string{testKey1, testKey2})

// testRedacted is f as the adapter's wrapper hands it on.
func testRedacted(f *Failure) *Failure {
	if f == nil {
		return nil
	}
	return testRedactor.failure(f).(*Failure)
}
