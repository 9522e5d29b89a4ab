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
