package engine

import (
	"testing"

	"gateway/adapters"
)

// A hedged attempt may outlive the handler, after which fasthttp reuses
// the request's buffers for another client's request: the race keeps its
// own copy of every byte of the call that points into them, a native
// request's body and beta header included.
func TestRaceOwnsTheRequestBytes(t *testing.T) {
	body, nbody, beta := []byte(`{"model":"auto"}`), []byte(`{"model":"native"}`), []byte("tools-2024")
	x := &exchange{}
	x.call = adapters.Call{Body: body, Beta: beta, Native: &adapters.Call{Body: nbody, Beta: beta, ModelStart: 9}}
	s := testEngine(t, benchConfig, Options{}).snap.Load()
	var h race
	h.start(nil, s, &group{hedge: 1}, x)
	defer h.timer.Stop()
	for _, b := range [][]byte{body, nbody, beta} {
		for i := range b {
			b[i] = 'X' // the next request's bytes
		}
	}
	c := h.call
	if string(c.Body) != `{"model":"auto"}` || string(c.Beta) != "tools-2024" ||
		string(c.Native.Body) != `{"model":"native"}` || string(c.Native.Beta) != "tools-2024" || c.Native.ModelStart != 9 {
		t.Errorf("the race's call changed with the request's buffers: body %q beta %q native %q %q",
			c.Body, c.Beta, c.Native.Body, c.Native.Beta)
	}
	if x.call.Native == c.Native {
		t.Error("the race shares the exchange's native call")
	}
}
