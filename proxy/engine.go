package proxy

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/wschaos/wschaos/rules"
)

// liveRule is a rule as the running proxy holds it: the checked rule and
// what has happened to it since it was loaded.
type liveRule struct {
	*rules.Rule
	since    time.Time    // when this definition was loaded
	fired    atomic.Int64 // times it fired, toward Limit
	disabled atomic.Bool
}

// take counts one firing against the rule's limit; it reports false when
// the limit is reached.
func (r *liveRule) take() bool {
	for {
		n := r.fired.Load()
		if r.Limit > 0 && n >= r.Limit {
			return false
		}
		if r.fired.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// ruleGen is one loaded rule set. It is never changed: a reload makes a
// new one, keeping the liveRule of every rule that did not change.
type ruleGen struct {
	rules []*liveRule
}

func (g *ruleGen) lookup(name string) *liveRule {
	if g == nil {
		return nil
	}
	for _, r := range g.rules {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// engine holds the proxy's rules, applies a reload to open sessions, and
// runs the clocks of every rules.
type engine struct {
	p       *Proxy
	mu      sync.Mutex // serializes load
	gen     atomic.Pointer[ruleGen]
	tickers map[*liveRule]context.CancelFunc
	wg      sync.WaitGroup
}

func newEngine(p *Proxy) *engine {
	e := &engine{p: p, tickers: map[*liveRule]context.CancelFunc{}}
	e.gen.Store(&ruleGen{})
	return e
}

// load makes set the running rules. An unchanged rule keeps its state; a
// new or changed one applies to open sessions too, its time and counters
// starting now.
func (e *engine) load(set *rules.Set) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	old := e.gen.Load()
	next := &ruleGen{}
	if set != nil {
		for _, r := range set.Rules {
			if o := old.lookup(r.Name); o != nil && o.Same(r) {
				next.rules = append(next.rules, o)
				continue
			}
			next.rules = append(next.rules, &liveRule{Rule: r, since: now})
		}
	}
	e.gen.Store(next)

	for lr, stop := range e.tickers {
		if !slices.Contains(next.rules, lr) {
			stop()
			delete(e.tickers, lr)
		}
	}
	for _, lr := range next.rules {
		if _, running := e.tickers[lr]; lr.Trigger == rules.Every && !running {
			ctx, cancel := context.WithCancel(e.p.base)
			e.tickers[lr] = cancel
			e.wg.Add(1)
			go e.tick(ctx, lr) // goroutine "every <rule>": ends with the rule or the proxy
		}
	}
	for _, s := range e.p.openSessions() {
		s.attach()
	}
}

// stop ends every clock and waits for them.
func (e *engine) stop() {
	e.mu.Lock()
	for lr, stop := range e.tickers {
		stop()
		delete(e.tickers, lr)
	}
	e.mu.Unlock()
	e.wg.Wait()
}

// tick is an every rule's clock: at each tick every open session the rule
// applies to gets the action at once.
func (e *engine) tick(ctx context.Context, lr *liveRule) {
	defer e.wg.Done()
	t := time.NewTicker(lr.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		n := e.fireAll(lr)
		if n > 0 {
			e.p.log.Info("clock ticked", zap.String("rule", lr.Name), zap.Int("sessions", n), zap.Duration("took", time.Since(start)))
		}
	}
}

// fireAll fires lr on every open session it applies to, as one wave, and
// returns how many it fired on.
func (e *engine) fireAll(lr *liveRule) int {
	var hit []*session
	for _, s := range e.p.openSessions() {
		if sr := s.ruleState(lr); sr != nil && sr.hit {
			hit = append(hit, s)
		}
	}
	// A close, reset or drop on sessions idle on their loops is the
	// loops' to carry out; the others leave their loops all at once, as
	// fire would have them leave one by one, each waiting for its loop's
	// turn.
	n, rest := fireOnLoops(hit, lr)
	offLanes(rest)
	w := &wave{}
	return n + w.run(e.p.poller, rest, func(s *session) bool {
		sr := s.ruleState(lr)
		return sr != nil && s.fire(sr, w)
	})
}

// rejectFor returns the first on-connect reject rule that applies to the
// upgrade attempt with this ordinal, counting it as fired.
func (e *engine) rejectFor(info *rules.Session, ordinal uint64) *liveRule {
	for _, lr := range e.gen.Load().rules {
		if lr.Trigger != rules.OnConnect || lr.Action.Kind != rules.Reject || lr.disabled.Load() {
			continue
		}
		if lr.Match.Matches(info) && lr.Hit(e.p.Seed, ordinal) && lr.take() {
			return lr
		}
	}
	return nil
}

// tlsFailFor reports the first tls_fail rule that applies to a TLS
// handshake from client, the ordinal-th on the listener, counting it as
// fired.
func (e *engine) tlsFailFor(info *rules.Session, ordinal uint64) *liveRule {
	for _, lr := range e.gen.Load().rules {
		if lr.Action.Kind != rules.TLSFail || lr.disabled.Load() {
			continue
		}
		if lr.Match.Matches(info) && lr.Hit(e.p.Seed, ordinal) && lr.take() {
			return lr
		}
	}
	return nil
}

// SetRules makes set the proxy's rules, at once for open sessions too. A
// rule whose definition did not change keeps its state (times fired,
// timers and counters of open sessions); a new or changed rule's time and
// counters start now for sessions older than it. Nil removes every rule.
func (p *Proxy) SetRules(set *rules.Set) {
	p.mu.Lock()
	e := p.engine
	if e == nil {
		p.Rules = set
	}
	p.mu.Unlock()
	if e != nil {
		e.load(set)
	}
}

// openSessions returns the sessions open now.
func (p *Proxy) openSessions() []*session {
	return p.appendSessions(nil)
}

// appendSessions appends the sessions open now to dst.
func (p *Proxy) appendSessions(dst []*session) []*session {
	p.mu.Lock()
	defer p.mu.Unlock()
	dst = slices.Grow(dst, len(p.sessions))
	for s := range p.sessions {
		dst = append(dst, s)
	}
	return dst
}
