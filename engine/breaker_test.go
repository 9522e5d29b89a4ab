package engine

import (
	"testing"
	"time"
)

func TestBreakerStateMachine(t *testing.T) {
	var b Breaker = new(breaker)
	openFor := int64(30 * time.Second)
	now := t0
	step := func(name string, wantAllow bool) {
		t.Helper()
		if ok, _ := b.Allow(now); ok != wantAllow {
			t.Fatalf("%s: allow = %v, want %v (state %s)", name, ok, wantAllow, b.State(now))
		}
	}
	// Four failures and a success: the count restarts, it stays closed.
	for range 4 {
		b.Failure(now, 5, openFor)
	}
	b.Success()
	for range 4 {
		b.Failure(now, 5, openFor)
	}
	step("4 consecutive failures", true)
	b.Failure(now, 5, openFor)
	step("5th consecutive failure opens", false)
	if refuses, until := b.Refuses(now); !refuses || until != now+openFor {
		t.Fatalf("refuses = %v until %v", refuses, time.Duration(until-now))
	}
	now += openFor - 1
	step("still open just before open_for", false)
	now++
	step("first call after open_for is the probe", true)
	step("a second call while the probe is out", false)
	b.Failure(now, 5, openFor)
	step("failed probe reopens", false)
	now += openFor
	step("next probe", true)
	b.Success()
	step("successful probe closes", true)
	step("closed lets everything through", true)
	if refuses, _ := b.Refuses(now); refuses {
		t.Fatal("closed breaker refuses")
	}
}
