package proxy

import (
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/zap"

	"github.com/wschaos/wschaos/rules"
)

// sessionRule is a rule's state in one session it applies to.
type sessionRule struct {
	lr    *liveRule
	hit   bool      // decided once, from the seed, the rule and the session's ordinal
	start time.Time // when the rule began to apply to the session
	count atomic.Int64
	fired atomic.Bool
	timer *time.Timer // After: guarded by session.mu
	rnd   *rand.Rand  // Delay: the jitter source; used by one copier only
}

// attach makes the session's rule list follow the running rules: rules
// kept from the previous list keep their state, new ones start from now.
// The rules are read under s.mu, so that of two concurrent attaches the
// last sees the newest rules.
func (s *session) attach() {
	s.mu.Lock()
	opened := s.opened
	s.mu.Unlock()
	if s.needsCopiers(s.p.engine.gen.Load(), opened) {
		s.offLane()
	}
	s.attachRules()
}

// needsCopiers reports whether a rule of gen that applies to the session
// acts in a way only its copiers can: an on_message rule looks at every
// message, and a connect rule fires as the session opens (opened: it has).
// Every other rule waits for a time, a tick or a count, which a session
// on a loop waits for there: it leaves its loop when the rule fires.
// Disabled rules count too, since enabling one does not attach again.
func (s *session) needsCopiers(gen *ruleGen, opened bool) bool {
	for _, lr := range gen.rules {
		if lr.Action.Kind == rules.Reject || lr.Action.Kind == rules.TLSFail {
			continue // decided before the session existed
		}
		if actsInCopiers(lr.Trigger, opened) && lr.Match.Matches(&s.info) && lr.Hit(s.p.Seed, s.id) {
			return true
		}
	}
	return false
}

// listNeedsCopiers is needsCopiers for the rules attached to a session
// not yet open: whether one that hits it only the copiers carry out.
func (s *session) listNeedsCopiers() bool {
	for _, sr := range *s.rules.Load() {
		if sr.hit && actsInCopiers(sr.lr.Trigger, false) {
			return true
		}
	}
	return false
}

// actsInCopiers reports whether a rule with trigger t acts where only a
// session's copiers can: on_message on every message, connect as the
// session opens (opened: it has, and connect rules no longer apply).
func actsInCopiers(t rules.Trigger, opened bool) bool {
	return t == rules.OnMessage || t == rules.OnConnect && !opened
}

// attachRules is attach's work once the session is off its loop, or on
// its loop while needsCopiers says it may stay there.
func (s *session) attachRules() {
	s.mu.Lock()
	defer s.mu.Unlock()
	gen := s.p.engine.gen.Load()
	if s.finished.Load() {
		return
	}
	old := s.rules.Load()
	var list []*sessionRule
	var counting, inspecting uint32
	var now time.Time // read once, for the first rule attached
	for _, lr := range gen.rules {
		var sr *sessionRule
		for _, o := range *old {
			if o.lr == lr {
				sr = o
			}
		}
		if sr == nil {
			if lr.Action.Kind == rules.Reject || lr.Action.Kind == rules.TLSFail {
				continue // decided before the session existed
			}
			if lr.Trigger == rules.OnConnect && s.opened || !lr.Match.Matches(&s.info) {
				continue // connect rules do not apply to sessions already open
			}
			// A rule's time counts from the session's opening (attach
			// runs right before the client's 101, the upstream already
			// answered, and openRules moves it to the 101's write) or,
			// for a session older than the rule, from the rule's load.
			if now.IsZero() {
				now = time.Now()
			}
			sr = &sessionRule{lr: lr, hit: lr.Hit(s.p.Seed, s.id), start: now}
			if s.opened {
				s.armAfter(sr) // else open arms it, once the client has its 101
			}
		}
		if list == nil {
			list = make([]*sessionRule, 0, len(gen.rules)) // one allocation however many apply
		}
		list = append(list, sr)
		if !sr.hit {
			continue
		}
		switch lr.Trigger {
		case rules.AfterMessages, rules.AfterBytes:
			counting |= uint32(lr.Direction)
		case rules.OnMessage:
			inspecting |= uint32(lr.Direction)
		}
	}
	for _, o := range *old {
		if o.timer != nil && !containsRule(list, o) {
			o.timer.Stop()
		}
	}
	s.rules.Store(&list)
	s.counting.Store(counting)
	s.inspecting.Store(inspecting)
}

// armAfter starts the timer of an after rule that hits the session; s.mu
// is held. The rule's time counts from sr.start, so a timer armed when the
// session opens still fires when the rule said.
func (s *session) armAfter(sr *sessionRule) {
	if sr.timer != nil {
		return
	}
	if d, ok := s.afterDelay(sr); ok {
		sr.timer = time.AfterFunc(d, func() { s.fire(sr, nil) })
	}
}

// afterDelay returns how long from now sr, an after rule that hits the
// session, fires; ok is false for any other rule. The rule's time counts
// from sr.start.
func (s *session) afterDelay(sr *sessionRule) (d time.Duration, ok bool) {
	lr := sr.lr
	if !sr.hit || lr.Trigger != rules.After {
		return 0, false
	}
	return time.Until(sr.start.Add(lr.Delay(s.p.Seed, s.id))), true
}

// timesAfter reports whether an after rule is to fire on s. Its time
// counts from the session's opening, which a loop marks (openRules) right
// after it has written the client's 101 or left it to the end of the
// batch of events: such a 101 must leave at once, or it would reach the
// client later, and the close early by as much.
func (s *session) timesAfter() bool {
	for _, sr := range *s.rules.Load() {
		if sr.hit && sr.lr.Trigger == rules.After {
			return true
		}
	}
	return false
}

func containsRule(list []*sessionRule, sr *sessionRule) bool {
	for _, x := range list {
		if x == sr {
			return true
		}
	}
	return false
}

// ruleState returns the state of lr in this session, or nil if lr does not
// apply to it.
func (s *session) ruleState(lr *liveRule) *sessionRule {
	for _, sr := range *s.rules.Load() {
		if sr.lr == lr {
			return sr
		}
	}
	return nil
}

// fireConnect fires the on-connect rules, right after the client got its
// 101.
func (s *session) fireConnect() {
	for _, sr := range *s.rules.Load() {
		if sr.lr.Trigger == rules.OnConnect {
			s.fire(sr, nil)
		}
	}
}

// claimCounted counts a data frame from src for the counting rules
// (after_messages counts whole messages, after_bytes payload bytes) before
// it is relayed, and claims the firing of those whose count it completes;
// the caller relays the frame and then fires them with fireCounted. A
// control frame, or any frame while no counting rule watches src, is not
// counted: that check is all a relayed frame pays when none does. An
// action that ends the session claims its end here, before the frame goes
// on, so that what the other side sends from then on, its answer to this
// very frame first of all, is drained and not relayed to a peer the fault
// is about to close or reset. (Relayed, an answer would reach the client
// just ahead of the RST, and a client that reads both in one wake-up, as
// node's does, reports a clean end instead of the reset.)
func (s *session) claimCounted(src side, h ws.Header) []*sessionRule {
	if h.OpCode.IsControl() || !s.isCounting(src) {
		return nil
	}
	dir := sideDir(src)
	var claimed []*sessionRule
	for _, sr := range *s.rules.Load() {
		lr := sr.lr
		if !sr.hit || lr.Direction&dir == 0 {
			continue
		}
		completes := false
		switch lr.Trigger {
		case rules.AfterMessages:
			completes = h.Fin && sr.count.Add(1) == lr.Count
		case rules.AfterBytes:
			if h.Length == 0 {
				continue
			}
			total := sr.count.Add(h.Length)
			completes = total >= lr.Count && total-h.Length < lr.Count
		}
		if completes && s.claim(sr) {
			claimed = append(claimed, sr)
		}
	}
	return claimed
}

// fireCounted fires the rules claimCounted claimed, once their frame has
// been relayed (or could not be: the session is ending either way).
func (s *session) fireCounted(claimed []*sessionRule) {
	for _, sr := range claimed {
		s.fireClaimed(sr, nil)
	}
}

// countFires reports whether the data frame h from src completes the count
// of a rule in list (a loop's read of s.rules): a loop, which cannot fire
// rules, leaves h to the copiers, which count it with claimCounted and fire.
func countFires(list []*sessionRule, src side, h ws.Header) bool {
	dir := sideDir(src)
	for _, sr := range list {
		lr := sr.lr
		if !sr.hit || lr.Direction&dir == 0 {
			continue
		}
		n := sr.count.Load()
		switch lr.Trigger {
		case rules.AfterMessages:
			if h.Fin && n+1 == lr.Count {
				return true
			}
		case rules.AfterBytes:
			if h.Length > 0 && n < lr.Count && n+h.Length >= lr.Count {
				return true
			}
		}
	}
	return false
}

// countOnLoop counts the data frame h from src for the rules in list, on
// a loop, once countFires has said that it fires none of them: a loop
// relays both directions, so no one else counts meanwhile.
func countOnLoop(list []*sessionRule, src side, h ws.Header) {
	dir := sideDir(src)
	for _, sr := range list {
		lr := sr.lr
		if !sr.hit || lr.Direction&dir == 0 {
			continue
		}
		switch {
		case lr.Trigger == rules.AfterMessages && h.Fin:
			sr.count.Add(1)
		case lr.Trigger == rules.AfterBytes:
			sr.count.Add(h.Length)
		}
	}
}

func sideDir(s side) rules.Direction {
	if s == sideClient {
		return rules.FromClient
	}
	return rules.FromUpstream
}

// fire performs sr's action on the session, unless the rule did not hit
// this session, is disabled, has fired here already or reached its limit,
// or the session is already ending (the first rule to end it wins). It
// reports whether the action was taken. w is the wave the firing is part
// of, or nil.
func (s *session) fire(sr *sessionRule, w *wave) bool {
	if !s.claim(sr) {
		return false
	}
	s.fireClaimed(sr, w)
	return true
}

// claim takes the session off its loop and decides whether sr fires now,
// as fire says; if so, the caller must fire it with fireClaimed.
func (s *session) claim(sr *sessionRule) bool {
	s.offLane()
	return s.claimFiring(sr)
}

// fireClaimed logs and records the firing of sr, which claim claimed, and
// performs its action, as part of wave w or (nil) on its own.
func (s *session) fireClaimed(sr *sessionRule, w *wave) {
	s.noteFiring(sr, w)
	s.act(&sr.lr.Action, sr.lr.Direction, sr, "rule "+sr.lr.Name, w)
}

// claimFiring decides whether sr fires now, as fire says, and if so counts
// it as fired; an action that ends the session claims its end.
func (s *session) claimFiring(sr *sessionRule) bool {
	lr := sr.lr
	if !sr.hit || lr.disabled.Load() || s.closing.Load() || s.finished.Load() || s.closeUnderway() {
		return false
	}
	if sr.fired.Swap(true) {
		return false
	}
	a := &lr.Action
	if ends(a.Kind) && !s.claimEnd() {
		return false // another rule is ending the session
	}
	if !lr.take() {
		if ends(a.Kind) {
			s.closing.Store(false)
		}
		return false
	}
	return true
}

// noteFiring logs and records sr's firing, as part of wave w or (nil) on
// its own.
func (s *session) noteFiring(sr *sessionRule, w *wave) {
	lr := sr.lr
	a := &lr.Action
	fields := []zap.Field{
		zap.String("rule", lr.Name),
		zap.Stringer("trigger", lr.Trigger),
		zap.Stringer("action", a.Kind),
		zap.Uint64("seed", s.p.Seed),
	}
	code := 0
	if a.Kind == rules.Close {
		code = a.Code
		if code == rules.CodeNone {
			code = 1005 // what the receiver reports
		}
		fields = append(fields, zap.Int("code", code), zap.String("reason", a.Reason), zap.Stringer("to", a.To))
	}
	// In a wave the line is written in the second pass: the first one
	// does only what the clients see. The event keeps the firing's time.
	w.then(func() { s.log(zap.InfoLevel, "fault fired", fields...) })
	s.p.emit(Event{Time: time.Now(), Kind: EventFault, Session: s.id, Client: s.clientAddr,
		Path: s.path, Query: s.query, Subprotocol: s.proto, By: "rule", Rule: lr.Name,
		Trigger: lr.Trigger.String(), Action: a.Kind.String(), Code: code, Reason: a.Reason})
}

// act performs an action on the session, as part of wave w or (nil) on
// its own.
func (s *session) act(a *rules.Action, dir rules.Direction, sr *sessionRule, why string, w *wave) {
	switch a.Kind {
	case rules.Close:
		s.closeFault(a.To, ws.StatusCode(a.Code), a.Reason, why, w)
	case rules.Reset:
		s.killFault(a.To, true, why, w)
	case rules.Drop:
		s.killFault(a.To, false, why, w)
	case rules.Hang:
		s.hang(dir, a.Duration, why)
	case rules.Delay:
		var rnd *rand.Rand
		if sr != nil {
			rnd = sr.lr.Rand(s.p.Seed, s.id)
		}
		s.startDelay(dir, a, rnd)
	}
}

// targets returns the peers a fault's To names, and the others.
func (s *session) targets(to rules.Target) (hit, other []*peer) {
	for _, p := range []*peer{s.client, s.upstream} {
		if targeted(to, p.side) {
			hit = append(hit, p)
		} else {
			other = append(other, p)
		}
	}
	return hit, other
}

// targeted reports whether a fault's to names the peer on side.
func targeted(to rules.Target, side side) bool {
	return side == sideClient && to&rules.ToClient != 0 || side == sideUpstream && to&rules.ToUpstream != 0
}

// killHow is how a reset (rst) or a drop ends a side, as the session's end
// records it.
func killHow(rst bool) string {
	if rst {
		return "tcp reset"
	}
	return "tcp fin"
}

// closeFault sends close code and reason to the sides to names and 1001 to
// the other; the connections are closed after the handshakes or closeGrace.
func (s *session) closeFault(to rules.Target, code ws.StatusCode, reason, why string, w *wave) {
	s.setEnd("proxy", why, code, reason)
	s.closing.Store(true)
	s.arm(closeGrace)
	hit, other := s.targets(to)
	for _, p := range hit {
		s.sendCloseIn(w, p, code, reason)
	}
	for _, p := range other {
		s.sendCloseIn(w, p, closeGoingAway, "going away")
	}
	s.maybeFinish()
}

// sendCloseIn sends a close frame to p: at once, unless p is the upstream
// and the close is part of a wave, which sends it in its second pass.
func (s *session) sendCloseIn(w *wave, p *peer, code ws.StatusCode, reason string) {
	if p.side == sideUpstream && w != nil {
		w.then(func() {
			s.sendClose(p, code, reason)
			s.maybeFinish()
		})
		return
	}
	s.sendClose(p, code, reason)
}

// killFault ends the sides to names without a close frame, with an RST
// (rst) or a FIN, and closes the other side with 1001.
func (s *session) killFault(to rules.Target, rst bool, why string, w *wave) {
	s.setEnd("proxy", why+": "+killHow(rst), 0, "")
	s.closing.Store(true)
	s.arm(closeGrace)
	hit, other := s.targets(to)
	for _, p := range hit {
		p.killed.Store(true)
		if rst {
			// A parked copier of p leaves the poller before p's socket
			// is closed, and then runs to its end.
			c := s.copiers[0]
			if p == s.upstream {
				c = s.copiers[1]
			}
			start := c != nil && s.unpark(c) // none if it ended on its loop
			p.gone.Store(true)
			p.reset()
			if start {
				go c.run()
			}
		} else {
			p.closeWrite()
		}
	}
	for _, p := range other {
		s.sendCloseIn(w, p, closeGoingAway, "going away")
	}
	s.maybeFinish()
}

// hang stops relaying in dir, pings and pongs included, while both TCP
// connections stay open. After d (if not 0) the client is reset.
func (s *session) hang(dir rules.Direction, d time.Duration, why string) {
	s.hung.Or(uint32(dir))
	if d <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.timers = append(s.timers, time.AfterFunc(d, func() {
		if !s.claimEnd() {
			return // another ending came first, and wins
		}
		s.killFault(rules.ToClient, true, why+": hang ended", nil)
	}))
}

// isCounting reports whether counting rules (after_messages, after_bytes)
// watch the frames from src: whether claimCounted counts them.
func (s *session) isCounting(src side) bool {
	return s.counting.Load()&uint32(sideDir(src)) != 0
}

// isHung reports whether frames from src are not to be relayed.
func (s *session) isHung(src side) bool {
	return s.hung.Load()&uint32(sideDir(src)) != 0
}

// ends reports whether an action ends the session.
func ends(k rules.ActionKind) bool {
	return k == rules.Close || k == rules.Reset || k == rules.Drop
}

// closeUnderway reports whether a peer has sent a close frame: the
// session is ending by its close handshake, which nothing may overtake.
func (s *session) closeUnderway() bool {
	return s.client.sentClose.Load() || s.upstream.sentClose.Load()
}

// claimEnd makes the caller the one that ends the session; it reports
// false if the session is ending already. The action's own close or kill
// then finds the session closing, as it left it.
func (s *session) claimEnd() bool {
	return !s.finished.Load() && s.closing.CompareAndSwap(false, true)
}
