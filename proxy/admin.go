package proxy

import (
	"cmp"
	"errors"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/wschaos/wschaos/rules"
)

// This file is what a control plane sees of a running proxy: its open
// sessions with their counters and rule states, its rules, and manual
// faults on one session or on every session that matches.

// ErrNoSession is returned for a session id that is not open.
var ErrNoSession = errors.New("no such session")

// ErrEnding is returned for a manual fault on a session that is already
// ending (its close handshake is under way).
var ErrEnding = errors.New("session is already ending")

// ErrNoRule is returned for a rule name that is not loaded.
var ErrNoRule = errors.New("no such rule")

// SessionInfo is a snapshot of an open session.
type SessionInfo struct {
	ID          uint64    `json:"id"`
	Client      string    `json:"client"`
	Path        string    `json:"path"`
	Query       string    `json:"query"`
	Subprotocol string    `json:"subprotocol"`
	Started     time.Time `json:"started"`

	// Counted per direction: what the client sent, what the upstream sent.
	Client2Upstream Traffic `json:"client_to_upstream"`
	Upstream2Client Traffic `json:"upstream_to_client"`

	Rules []SessionRule `json:"rules"`
}

// Traffic is what one side of a session has sent so far.
type Traffic struct {
	Frames   uint64 `json:"frames"`
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
}

// SessionRule is a rule's state in one session it applies to.
type SessionRule struct {
	Name    string    `json:"name"`
	Hit     bool      `json:"hit"`     // the seeded draw picked this session
	Fired   bool      `json:"fired"`   // it fired on this session
	Counted int64     `json:"counted"` // after_messages: messages; after_bytes: bytes
	FiresAt time.Time `json:"fires_at,omitzero"`
}

// RuleInfo is a loaded rule and what it has done.
type RuleInfo struct {
	Name    string `json:"name"`
	Summary string `json:"summary"`
	Trigger string `json:"trigger"`
	Action  string `json:"action"`
	Enabled bool   `json:"enabled"`
	Fired   int64  `json:"fired"`
	Limit   int64  `json:"limit,omitempty"`
}

// Stats are the proxy's totals since it started.
type Stats struct {
	Active          int
	Total           uint64 // sessions opened
	Client2Upstream Traffic
	Upstream2Client Traffic
	// AcceptPauses counts the pauses in accepting connections after an
	// accept failed for want of file descriptors or memory (see Serve).
	AcceptPauses uint64
}

func (s *session) snapshot() SessionInfo {
	si := SessionInfo{
		ID:              s.id,
		Client:          s.clientAddr,
		Path:            s.path,
		Query:           s.query,
		Subprotocol:     s.proto,
		Started:         s.start,
		Client2Upstream: s.client.traffic(),
		Upstream2Client: s.upstream.traffic(),
		Rules:           []SessionRule{},
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sr := range *s.rules.Load() {
		r := SessionRule{Name: sr.lr.Name, Hit: sr.hit, Fired: sr.fired.Load(), Counted: sr.count.Load()}
		if sr.hit && sr.lr.Trigger == rules.After {
			r.FiresAt = sr.start.Add(sr.lr.Delay(s.p.Seed, s.id))
		}
		si.Rules = append(si.Rules, r)
	}
	return si
}

func (p *peer) traffic() Traffic {
	return Traffic{Frames: p.frames.Load(), Messages: p.messages.Load(), Bytes: p.bytes.Load()}
}

// Sessions returns the open sessions, oldest first.
func (p *Proxy) Sessions() []SessionInfo {
	open := p.openSessions()
	out := make([]SessionInfo, 0, len(open))
	for _, s := range open {
		out = append(out, s.snapshot())
	}
	slices.SortFunc(out, func(a, b SessionInfo) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Session returns the open session with this id.
func (p *Proxy) Session(id uint64) (SessionInfo, error) {
	s := p.lookup(id)
	if s == nil {
		return SessionInfo{}, ErrNoSession
	}
	return s.snapshot(), nil
}

func (p *Proxy) lookup(id uint64) *session {
	p.mu.Lock()
	defer p.mu.Unlock()
	for s := range p.sessions {
		if s.id == id {
			return s
		}
	}
	return nil
}

// Manual is a fault asked for by hand, on one session or on many.
type Manual struct {
	Action rules.ActionKind // Close, Reset, Drop or Hang
	Code   int              // Close: a code rules.ParseCode accepts; rules.CodeNone for an empty frame
	Reason string           // Close
}

// Inject performs a manual fault on the open session id. The event and
// log line name the rule "manual".
func (p *Proxy) Inject(id uint64, m Manual) error {
	s := p.lookup(id)
	if s == nil {
		return ErrNoSession
	}
	if !s.manual(m, nil) {
		return ErrEnding
	}
	return nil
}

// InjectMatching performs a manual fault on every open session that m
// matches (nil: every session) and returns how many there were.
func (p *Proxy) InjectMatching(match *rules.Match, m Manual) int {
	var hit []*session
	for _, s := range p.openSessions() {
		if match == nil || match.Matches(&s.info) {
			hit = append(hit, s)
		}
	}
	offLanes(hit) // all at once: manual would wait for each session's loop in turn
	w := &wave{}
	return w.run(p.poller, hit, func(s *session) bool { return s.manual(m, w) })
}

// manual performs m on the session, as part of wave w or (nil) on its
// own, unless it is already ending.
func (s *session) manual(m Manual, w *wave) bool {
	s.offLane()
	if s.closeUnderway() {
		return false
	}
	if ends(m.Action) && !s.claimEnd() || s.closing.Load() && !ends(m.Action) || s.finished.Load() {
		return false
	}
	a := &rules.Action{Kind: m.Action, Code: m.Code, Reason: m.Reason, To: rules.ToClient}
	code := 0
	if m.Action == rules.Close {
		code = m.Code
		if code == rules.CodeNone {
			code = 1005
		}
	}
	w.then(func() { // in a wave, after every client has its close (see fire)
		s.log(zap.InfoLevel, "fault fired", zap.String("rule", "manual"), zap.Stringer("action", m.Action),
			zap.Int("code", code), zap.String("reason", m.Reason))
	})
	s.p.emit(Event{Time: time.Now(), Kind: EventFault, Session: s.id, Client: s.clientAddr,
		Path: s.path, Query: s.query, Subprotocol: s.proto, By: "manual", Rule: "manual",
		Trigger: "manual", Action: m.Action.String(), Code: code, Reason: m.Reason})
	s.act(a, rules.FromBoth, nil, "manual "+m.Action.String(), w)
	return true
}

// RuleInfos returns the loaded rules, in the order of the file.
func (p *Proxy) RuleInfos() []RuleInfo {
	p.mu.Lock()
	e := p.engine
	p.mu.Unlock()
	if e == nil {
		return []RuleInfo{}
	}
	gen := e.gen.Load()
	out := make([]RuleInfo, 0, len(gen.rules))
	for _, lr := range gen.rules {
		out = append(out, RuleInfo{
			Name: lr.Name, Summary: lr.String(), Trigger: lr.Trigger.String(), Action: lr.Action.Kind.String(),
			Enabled: !lr.disabled.Load(), Fired: lr.fired.Load(), Limit: lr.Limit,
		})
	}
	return out
}

// EnableRule turns a loaded rule on or off, at once for open sessions too.
// The state lasts until the rule changes in a reload.
func (p *Proxy) EnableRule(name string, on bool) error {
	p.mu.Lock()
	e := p.engine
	p.mu.Unlock()
	if e == nil {
		return ErrNoRule
	}
	lr := e.gen.Load().lookup(name)
	if lr == nil {
		return ErrNoRule
	}
	lr.disabled.Store(!on)
	return nil
}

// Stats returns the proxy's totals.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	st := Stats{Active: len(p.sessions), Total: p.totals.sessions,
		Client2Upstream: p.totals.c2u, Upstream2Client: p.totals.u2c, AcceptPauses: p.acceptPauses.Load()}
	open := make([]*session, 0, len(p.sessions))
	for s := range p.sessions {
		open = append(open, s)
	}
	p.mu.Unlock()
	for _, s := range open {
		st.Client2Upstream.add(s.client.traffic())
		st.Upstream2Client.add(s.upstream.traffic())
	}
	return st
}

func (t *Traffic) add(o Traffic) {
	t.Frames += o.Frames
	t.Messages += o.Messages
	t.Bytes += o.Bytes
}

// totals are the counters of sessions that have ended, and how many
// sessions there have been; guarded by Proxy.mu.
type totals struct {
	sessions uint64
	c2u, u2c Traffic
}

// closeCode returns the code a close frame carried for the event log: 0
// for none, 1005 for an empty one.
func closeCode(ci *closeInfo) int {
	switch {
	case ci == nil:
		return 0
	case ci.code == 0:
		return 1005
	}
	return int(ci.code)
}
