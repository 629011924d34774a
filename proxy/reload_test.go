package proxy_test

import (
	"errors"
	"testing"
	"time"

	"github.com/wschaos/wschaos/proxy"
	"github.com/wschaos/wschaos/rules"
)

// closeAfter is a rule that closes sessions with 4000 after d.
func closeAfter(name string, d time.Duration) rules.Spec {
	return rules.Spec{Name: name, After: d.String(), Action: "close", Code: int64(4000)}
}

// firesAt returns when the after rule called name fires on session id.
func firesAt(t *testing.T, p *proxy.Proxy, id uint64, name string) time.Time {
	t.Helper()
	info, err := p.Session(id)
	if err != nil {
		t.Fatalf("Session(%d): got %v; want nil", id, err)
	}
	for _, r := range info.Rules {
		if r.Name == name {
			return r.FiresAt
		}
	}
	t.Fatalf("session %d rules: got %+v; want %s among them", id, info.Rules, name)
	return time.Time{}
}

// ruleInfo returns the loaded rule called name.
func ruleInfo(t *testing.T, p *proxy.Proxy, name string) proxy.RuleInfo {
	t.Helper()
	for _, r := range p.RuleInfos() {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("rules: got %+v; want %s among them", p.RuleInfos(), name)
	return proxy.RuleInfo{}
}

func TestSetRulesNewAfterRuleCountsFromReload(t *testing.T) {
	t.Parallel()
	const after = 400 * time.Millisecond
	addr, p, ev := startRules(t, startGorillaEcho(t), nil)
	c, _ := dialRaw(t, addr, nil, nil)
	if got := probe(t, c, "hi"); !got.echoed {
		t.Fatalf("before the rule: got close %d; want the echo", got.code)
	}
	time.Sleep(300 * time.Millisecond)

	reload := time.Now()
	p.SetRules(compileRules(t, false, closeAfter("later", after)))
	if at := firesAt(t, p, 1, "later"); at.Sub(reload) < after {
		t.Errorf("fires at: got %v after the reload; want at least %v", at.Sub(reload), after)
	}
	if _, code, _ := c.readCloseFrame(t); code != 4000 {
		t.Errorf("close: got %d; want 4000", code)
	}
	if elapsed := time.Since(reload); elapsed < after {
		t.Errorf("closed %v after the reload; want at least %v (counted from the reload, not the session's start)", elapsed, after)
	}
	checkFault(t, ev, 1, proxy.Event{Rule: "later", Trigger: "after", Action: "close", Code: 4000, By: "rule"})
}

func TestSetRulesKeepsUnchangedRules(t *testing.T) {
	t.Parallel()
	t.Run("after timer is not restarted", func(t *testing.T) {
		t.Parallel()
		const after = 800 * time.Millisecond
		a := closeAfter("a", after)
		addr, p, ev := startRules(t, startGorillaEcho(t), compileRules(t, false, a))
		dial := time.Now()
		c, _ := dialRaw(t, addr, nil, nil)
		// The rule's time is set once the session has opened, which the
		// echo follows.
		if got := probe(t, c, "opened"); !got.echoed {
			t.Fatalf("probe: got close %d; want the echo", got.code)
		}
		before := firesAt(t, p, 1, "a")
		time.Sleep(after / 2)

		// The same rule, compiled anew, next to a new one.
		reload := time.Now()
		other := closeOnConnect("other")
		p.SetRules(compileRules(t, false, a, other))
		if got := firesAt(t, p, 1, "a"); !got.Equal(before) {
			t.Errorf("fires at: got %v after the reload; want %v as before it", got, before)
		}
		if _, code, _ := c.readCloseFrame(t); code != 4000 {
			t.Errorf("close: got %d; want 4000", code)
		}
		closed := time.Now()
		if closed.Sub(dial) < after {
			t.Errorf("closed %v after the dial; want at least %v", closed.Sub(dial), after)
		}
		if !closed.Before(reload.Add(after)) {
			t.Errorf("closed %v after the reload; want before %v (the timer kept, not restarted)", closed.Sub(reload), after)
		}
		checkFault(t, ev, 1, proxy.Event{Rule: "a", Trigger: "after", Action: "close", Code: 4000, By: "rule"})
	})

	t.Run("fired count stays; a changed rule starts over", func(t *testing.T) {
		t.Parallel()
		once := closeOnConnect("once")
		once.Limit = ptr[int64](1)
		addr, p, _ := startRules(t, startGorillaEcho(t), compileRules(t, false, once))
		if hit := openSequentially(t, addr, 1); len(hit) != 1 {
			t.Fatalf("first session: got hit %v; want it closed", hit)
		}
		p.SetRules(compileRules(t, false, once))
		if got := ruleInfo(t, p, "once").Fired; got != 1 {
			t.Errorf("fired after an unchanged reload: got %d; want 1", got)
		}
		if hit := openSequentially(t, addr, 1); len(hit) != 0 {
			t.Errorf("after an unchanged reload: got the session closed; want its limit still reached")
		}
		changed := once
		changed.Reason = ptr("changed")
		p.SetRules(compileRules(t, false, changed))
		if got := ruleInfo(t, p, "once").Fired; got != 0 {
			t.Errorf("fired after a change: got %d; want 0", got)
		}
		if hit := openSequentially(t, addr, 1); len(hit) != 1 {
			t.Errorf("after a change: got the echo; want the session closed")
		}
	})

	t.Run("a changed after rule counts from the reload", func(t *testing.T) {
		t.Parallel()
		const after = 600 * time.Millisecond
		a := closeAfter("a", after)
		a.Reason = ptr("old")
		addr, p, _ := startRules(t, startGorillaEcho(t), compileRules(t, false, a))
		c, _ := dialRaw(t, addr, nil, nil)
		time.Sleep(after / 2)
		reload := time.Now()
		a.Reason = ptr("new")
		p.SetRules(compileRules(t, false, a))
		if at := firesAt(t, p, 1, "a"); at.Sub(reload) < after {
			t.Errorf("fires at: got %v after the reload; want at least %v", at.Sub(reload), after)
		}
		if _, code, reason := c.readCloseFrame(t); code != 4000 || reason != "new" {
			t.Errorf("close: got %d %q; want 4000 %q", code, reason, "new")
		}
		if elapsed := time.Since(reload); elapsed < after {
			t.Errorf("closed %v after the reload; want at least %v", elapsed, after)
		}
	})
}

func TestSetRulesRemovedRuleDoesNotFire(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		spec rules.Spec
	}{
		{"after", closeAfter("gone", 300*time.Millisecond)},
		{"every", rules.Spec{Name: "gone", Every: "300ms", Action: "close", Code: int64(4000)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			keep := closeOnConnect("kept")
			keep.Match.Path = "/never"
			addr, p, ev := startRules(t, startGorillaEcho(t), compileRules(t, false, tt.spec, keep))
			dial := time.Now()
			c, _ := dialRaw(t, addr, nil, nil)
			p.SetRules(compileRules(t, false, keep))
			if infos := p.RuleInfos(); len(infos) != 1 || infos[0].Name != "kept" {
				t.Errorf("rules: got %+v; want only kept", infos)
			}
			time.Sleep(time.Until(dial.Add(700 * time.Millisecond)))
			if got := probe(t, c, "still open"); !got.echoed {
				t.Errorf("session: got close %d; want the echo", got.code)
			}
			if n := len(ev.of(proxy.EventFault, 0)); n != 0 {
				t.Errorf("fault events: got %d; want 0", n)
			}
		})
	}
}

func TestSetRulesConnectRuleOnlyForNewSessions(t *testing.T) {
	t.Parallel()
	addr, p, ev := startRules(t, startGorillaEcho(t), nil)
	old, _ := dialRaw(t, addr, nil, nil)
	if got := probe(t, old, "hi"); !got.echoed {
		t.Fatalf("before the rule: got close %d; want the echo", got.code)
	}
	p.SetRules(compileRules(t, false, closeOnConnect("at-connect")))
	info, err := p.Session(1)
	if err != nil {
		t.Fatalf("Session(1): got %v; want nil", err)
	}
	if len(info.Rules) != 0 {
		t.Errorf("open session's rules: got %+v; want none", info.Rules)
	}
	fresh, _ := dialRaw(t, addr, nil, nil)
	if got := probe(t, fresh, "hi"); got.code != 4000 {
		t.Errorf("new session: got %+v; want close 4000", got)
	}
	if got := probe(t, old, "hi again"); !got.echoed {
		t.Errorf("open session: got close %d; want the echo", got.code)
	}
	if faults := ev.of(proxy.EventFault, 0); len(faults) != 1 || faults[0].Session != 2 {
		t.Errorf("fault events: got %+v; want one, for session 2", faults)
	}
}

func TestEnableRule(t *testing.T) {
	t.Parallel()
	a := closeOnConnect("a")
	a.Match.Path = "/a"
	b := closeAfter("b", 300*time.Millisecond)
	b.Match.Path = "/b"
	b.Limit = ptr[int64](5)
	set := compileRules(t, false, a, b)
	addr, p, ev := startRules(t, startGorillaEcho(t), set)

	if err := p.EnableRule("nope", false); !errors.Is(err, proxy.ErrNoRule) {
		t.Errorf("EnableRule of an unknown rule: got %v; want %v", err, proxy.ErrNoRule)
	}
	if err := p.EnableRule("a", false); err != nil {
		t.Fatalf("EnableRule: got %v; want nil", err)
	}
	c, _ := dialRaw(t, addr+"/a", nil, nil)
	if got := probe(t, c, "hi"); !got.echoed {
		t.Errorf("rule a disabled: got close %d; want the echo", got.code)
	}
	if err := p.EnableRule("a", true); err != nil {
		t.Fatalf("EnableRule: got %v; want nil", err)
	}
	c, _ = dialRaw(t, addr+"/a", nil, nil)
	if got := probe(t, c, "hi"); got.code != 4000 {
		t.Errorf("rule a enabled again: got %+v; want close 4000", got)
	}

	// A disabled after rule lets its time pass without firing.
	dial := time.Now()
	c, _ = dialRaw(t, addr+"/b", nil, nil)
	if err := p.EnableRule("b", false); err != nil {
		t.Fatalf("EnableRule: got %v; want nil", err)
	}
	time.Sleep(time.Until(dial.Add(600 * time.Millisecond)))
	if got := probe(t, c, "hi"); !got.echoed {
		t.Errorf("rule b disabled: got close %d; want the echo", got.code)
	}

	want := []proxy.RuleInfo{
		{Name: "a", Trigger: "connect", Action: "close", Enabled: true, Fired: 1},
		{Name: "b", Trigger: "after", Action: "close", Enabled: false, Fired: 0, Limit: 5},
	}
	check := func(when string) {
		t.Helper()
		infos := p.RuleInfos()
		if len(infos) != len(want) {
			t.Fatalf("%s: got %d rules; want %d", when, len(infos), len(want))
		}
		for i, got := range infos {
			r, _ := set.Lookup(want[i].Name)
			w := want[i]
			w.Summary = r.String()
			if got != w {
				t.Errorf("%s: got %+v; want %+v", when, got, w)
			}
		}
	}
	check("rule infos")
	// An unchanged reload keeps the rules as they are, disabled included.
	p.SetRules(compileRules(t, false, a, b))
	check("after an unchanged reload")

	// Enabled again, b does not fire late on the session whose moment
	// passed while it was disabled.
	if err := p.EnableRule("b", true); err != nil {
		t.Fatalf("EnableRule: got %v; want nil", err)
	}
	time.Sleep(200 * time.Millisecond)
	if got := probe(t, c, "hi"); !got.echoed {
		t.Errorf("rule b enabled after its moment: got close %d; want the echo", got.code)
	}
	if n := len(ev.of(proxy.EventFault, 0)); n != 1 {
		t.Errorf("fault events: got %d; want 1", n)
	}
}
