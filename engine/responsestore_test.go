package engine

import (
	"strconv"
	"testing"
)

func TestResponseStore(t *testing.T) {
	st := newResponseStore()
	const ttl, max = 100, 1000
	r := func(id, key string, size int) *storedResponse {
		return &storedResponse{id: id, key: key, response: make([]byte, size)}
	}
	if !st.put(r("a", "k1", 100), 0, ttl, max) {
		t.Fatal("put refused")
	}
	if _, ok := st.get("a", "k1", 10, ttl); !ok {
		t.Error("stored answer not found by its key")
	}
	if _, ok := st.get("a", "k2", 10, ttl); ok {
		t.Error("another key sees the answer")
	}
	if _, ok := st.get("a", "k1", 101, ttl); ok {
		t.Error("an answer past its ttl is still served")
	}
	if st.size != 0 || len(st.byID) != 0 {
		t.Errorf("expired answer still counted: size %d, %d entries", st.size, len(st.byID))
	}
	// The size bound evicts the oldest first.
	for i := range 10 {
		st.put(r(strconv.Itoa(i), "k", 150), int64(i), ttl, max)
	}
	if st.size > max {
		t.Errorf("size %d over the bound %d", st.size, max)
	}
	if _, ok := st.get("0", "k", 10, ttl); ok {
		t.Error("the oldest answer survived the size bound")
	}
	if _, ok := st.get("9", "k", 10, ttl); !ok {
		t.Error("the newest answer was evicted")
	}
	if st.put(r("huge", "k", 2000), 20, ttl, max) {
		t.Error("an answer over the whole bound was stored")
	}
	// Replacing an id counts it once.
	before := st.size
	st.put(r("9", "k", 150), 21, ttl, max)
	if st.size != before {
		t.Errorf("re-put changed size %d -> %d", before, st.size)
	}
}

// TestResponseStoreCountsWhatItHolds: an answer that is a small slice of
// a large buffer is stored as a copy of its own, and the size bound
// counts the memory the store holds, not the answer's length.
func TestResponseStoreCountsWhatItHolds(t *testing.T) {
	st := newResponseStore()
	big := make([]byte, 1<<20)
	copy(big, `{"id":"resp_1"}`)
	history := append(make([]byte, 0, 1<<20), `[{"role":"user","content":"hi"}]`...)
	if !st.put(&storedResponse{id: "resp_1", key: "k", response: big[:15], history: history}, 0, 100, 1000) {
		t.Fatal("an answer of some 50 bytes was refused by a 1000-byte bound")
	}
	r, ok := st.get("resp_1", "k", 1, 100)
	if !ok {
		t.Fatal("stored answer not found")
	}
	if cap(r.response) >= 1<<20 || cap(r.history) >= 1<<20 {
		t.Errorf("the store holds the caller's buffers: capacities %d and %d", cap(r.response), cap(r.history))
	}
	big[2], history[2] = 'X', 'X'
	if string(r.response) != `{"id":"resp_1"}` || string(r.history) != `[{"role":"user","content":"hi"}]` {
		t.Errorf("the stored answer changed with the caller's buffers: %s %s", r.response, r.history)
	}
	if want := int64(len("resp_1") + len("k") + cap(r.response) + cap(r.history)); st.size != want {
		t.Errorf("size %d, want the %d bytes held", st.size, want)
	}
}
