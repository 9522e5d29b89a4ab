package engine

import (
	"time"

	"gateway/adapters"
)

// recheck starts checking a key the upstream refused (401/403) until it
// works again, so a key that was briefly refused (a billing hiccup, a
// key re-enabled in the provider's console) returns at once instead of
// after the whole auth_cooldown. The first check waits
// failover.auth_recheck and each refusal doubles the wait; the checks
// stop when the key works (its cooldown is lifted), when its cooldown
// ends or is lifted otherwise, or when the engine closes. At most one
// check runs per key, and a check spends no tokens (the model list).
func (e *Engine) recheck(s *snapshot, c candidate) {
	wait := time.Duration(s.authRecheck)
	if wait <= 0 || c.key < 0 || c.t.provider.client == nil || !c.ks.rechecking.CompareAndSwap(false, true) {
		return
	}
	p := c.t.provider.cfg
	e.bg.Add(1)
	go func() {
		defer e.bg.Done()
		defer c.ks.rechecking.Store(false)
		t := time.NewTimer(wait)
		defer t.Stop()
		for {
			select {
			case <-e.stop:
				return
			case <-t.C:
			}
			until, reason, on := c.ks.until.Active(nanotime())
			if !on || reason != coolAuth {
				return
			}
			switch adapters.CheckKey(p, c.key, c.t.provider.client, listTimeout) {
			case adapters.KeyWorks:
				c.ks.until.Lift(until)
				e.log.Info("provider key works again", "via", c.t.name, "key", c.slot+1)
				return
			case adapters.KeyRefused:
				wait *= 2
			}
			t.Reset(min(wait, time.Duration(until-nanotime())))
		}
	}()
}
