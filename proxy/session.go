package proxy

import (
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wschaos/wschaos/rules"
)

// Close codes the proxy sends on its own behalf (RFC 6455 section 7.4.1).
const (
	closeGoingAway     ws.StatusCode = 1001
	closeProtocolError ws.StatusCode = 1002
	closeTooBig        ws.StatusCode = 1009
)

// relayedCloseTimeout bounds a close handshake the proxy only relays: if
// the side that got a close frame neither answers nor ends its connection
// in this time, both connections are closed.
const relayedCloseTimeout = 10 * time.Second

// session is one proxied WebSocket connection: a client, an upstream and
// the two copiers between them.
type session struct {
	p     *Proxy
	id    uint64
	start time.Time
	path  string
	query string
	proto string

	clientAddr string
	rsv        byte // RSV bits the negotiated extensions allow
	strict     bool // only permessage-deflate: RSV1 on a message's first frame only

	client, upstream *peer

	// copiers are client->upstream and upstream->client. A session a
	// loop relays has none until it leaves its lane (makeCopiers, before
	// s.lane is cleared), and none for good if it ends there: read them
	// only once s.lane has been seen nil.
	copiers [2]*copier

	closing  atomic.Bool   // the proxy sent its own close frames: copiers drain
	finished atomic.Bool   // both connections are being closed
	done     chan struct{} // closed with finished

	// Rules.
	info       rules.Session
	rules      atomic.Pointer[[]*sessionRule] // &noRules until rules attach
	noRules    []*sessionRule                 // always empty
	counting   atomic.Uint32                  // directions (rules.Direction bits) with after_messages or after_bytes rules
	inspecting atomic.Uint32                  // directions with on_message rules
	hung       atomic.Uint32                  // directions not relayed any more

	// lane is the loop relaying the session, nil once copiers do (see
	// lanes); whatever acts on a session from a goroutine first has it
	// leave its lane (offLane).
	lane atomic.Pointer[laneSession]

	live atomic.Int32 // copiers still running

	mu     sync.Mutex
	opened bool          // on-connect rules have fired
	timer  *time.Timer   // ends the session if a close handshake stalls
	idle   *time.Timer   // the idle timeout
	timers []*time.Timer // a hang's end
	end    endInfo
}

// endInfo says who ended a session and how; the first to end it wins.
type endInfo struct {
	by     string // client, upstream or proxy
	why    string
	code   ws.StatusCode
	reason string
}

// newSession makes the session of req, from the client at clientAddr
// (the address as its String gives it) whose rules see info; with its
// copiers unless a loop relays it.
func newSession(p *Proxy, id uint64, req *http.Request, start time.Time, clientAddr string, info rules.Session, client, upstream *peer, hs ws.Handshake, onLoop bool) *session {
	s := &session{
		p:     p,
		id:    id,
		start: start,
		path:  req.URL.Path,
		query: req.URL.RawQuery,
		proto: hs.Protocol,

		clientAddr: clientAddr,
		client:     client,
		upstream:   upstream,
		done:       make(chan struct{}),
		info:       info,
	}
	s.info.Subprotocol = hs.Protocol
	s.info.Answered = true
	if !onLoop {
		s.makeCopiers()
	}
	s.rsv, s.strict = allowedRSV(hs)
	s.rules.Store(&s.noRules)
	s.live.Store(int32(len(s.copiers)))
	return s
}

// makeCopiers gives the session its copiers.
func (s *session) makeCopiers() {
	cs := &[2]copier{ // one allocation
		{s: s, src: s.client, dst: s.upstream},
		{s: s, src: s.upstream, dst: s.client},
	}
	s.copiers = [2]*copier{&cs[0], &cs[1]}
}

// sessionInfo returns what rules match an upgrade request on; client is
// the client's address as its String gives it.
func sessionInfo(req *http.Request, client string) rules.Session {
	var query url.Values // nil for none, which matches as an empty one
	if req.URL.RawQuery != "" {
		query = req.URL.Query()
	}
	info := rules.Session{
		Path:    req.URL.Path,
		Query:   query,
		Header:  req.Header,
		Offered: splitTokens(req.Header.Values("Sec-Websocket-Protocol")),
	}
	if ap, err := netip.ParseAddrPort(client); err == nil {
		info.Client = ap.Addr().Unmap()
	}
	return info
}

// allowedRSV returns the RSV bits the negotiated extensions give a meaning
// to (RFC 6455 section 5.2). permessage-deflate (RFC 7692) uses RSV1 on the
// first frame of a message; an extension the proxy does not know may use
// any bit anywhere.
func allowedRSV(hs ws.Handshake) (bits byte, strict bool) {
	strict = true
	for _, e := range hs.Extensions {
		if string(e.Name) == "permessage-deflate" {
			bits |= rsv1
		} else {
			bits, strict = rsv1|rsv2|rsv3, false
		}
	}
	return bits, strict
}

const (
	rsv1 byte = 0x4
	rsv2 byte = 0x2
	rsv3 byte = 0x1
)

func (s *session) peers(src *peer) (other *peer) {
	if src == s.client {
		return s.upstream
	}
	return s.client
}

// open relays frames until the session ends or the proxy stops. It starts
// one of the session's two copiers on a goroutine of its own and runs the
// other itself, on the handshake's goroutine (one goroutine fewer to start
// per session); the copier that ends last closes the session (finish). A
// copier whose source falls quiet parks, ending its goroutine, so that an
// idle session has none.
func (s *session) open() {
	s.announce()
	if d := s.p.IdleTimeout; d > 0 {
		s.mu.Lock()
		s.idle = time.AfterFunc(d/4, s.checkIdle(0, time.Now()))
		s.mu.Unlock()
	}

	s.fireConnect()
	s.markOpened()
	s.resume()
}

// markOpened records that the client has its 101 and starts the timers of
// the after rules. They start now, not at attach: attach runs before the
// 101, and a reset or drop that came first would fail the handshake.
func (s *session) markOpened() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opened = true
	s.openRules(time.Now())
	if !s.finished.Load() {
		for _, sr := range *s.rules.Load() {
			s.armAfter(sr)
		}
	}
}

// openRules has the time of every rule attached before the session opened
// count from its opening, at now: once the client's 101 is written (or,
// for a session a loop hands to goroutines, given to the copier that
// writes it first). Attach runs before the 101, and a time counted from
// there would have the rule fire early by however long the 101 then took
// (the loop's thread losing its CPU, a collection's pause). s.mu is held.
func (s *session) openRules(now time.Time) {
	for _, sr := range *s.rules.Load() {
		if sr.start.Before(now) {
			sr.start = now
		}
	}
}

// announce logs the session's opening and records its event.
func (s *session) announce() {
	s.log(zap.InfoLevel, "session opened", zap.String("subprotocol", s.proto))
	s.p.emit(Event{Time: time.Now(), Kind: EventOpened, Session: s.id, Client: s.clientAddr,
		Path: s.path, Query: s.query, Subprotocol: s.proto, Duration: time.Since(s.start)})
}

// resume starts the copiers: from the session's opening, or where its
// loop left it.
func (s *session) resume() {
	// A connection that cannot park never falls quiet in the poller's
	// eyes: it gets keep-alive now.
	for _, c := range s.copiers {
		if s.p.poller == nil || c.src.fd < 0 {
			c.src.keepAlive()
		}
	}

	// Each copier ends once its source ends or the connections are
	// closed, which the end of the other one, a close handshake's timer or
	// a forced shutdown brings about; it parks with the poller, ending its
	// goroutine, whenever its source has been quiet for parkAfter. The
	// session may be ending already: states move by compare-and-swap, so
	// each copier is started exactly once, here or by the poller.
	var inline *copier
	for _, c := range s.copiers {
		if !c.state.CompareAndSwap(0, copierRunning) {
			continue
		}
		if inline == nil {
			inline = c
			continue
		}
		go c.run() // copier "client->upstream" or "upstream->client"
	}
	if inline != nil {
		inline.run()
	}
}

// unpark takes a parked copier out of the poller before its socket is
// closed, and reports whether the caller must start it (after closing the
// socket). A copier that open has not started yet is left to open: its
// first read then fails at once.
func (s *session) unpark(c *copier) bool {
	if c.state.CompareAndSwap(copierParked, copierRunning) {
		s.p.poller.forget(c)
		return true
	}
	return false
}

// copierDone is called by each copier as it ends; the last one finishes
// the session.
func (s *session) copierDone() {
	if s.live.Add(-1) == 0 {
		s.finish()
	}
}

// finish closes what remains of the session, logs its end and forgets it.
func (s *session) finish() {
	end := s.stopTimers()
	s.abort()
	for _, p := range []*peer{s.client, s.upstream} {
		p.wmu.Lock()
		p.flush()
		p.wmu.Unlock()
	}

	s.recordEnd(end)
}

// recordEnd logs the session's end, records its event and forgets it.
func (s *session) recordEnd(end endInfo) {
	if s.p.log.Core().Enabled(zap.InfoLevel) {
		s.logEnd(end)
	}
	s.p.emit(Event{Time: time.Now(), Kind: EventClosed, Session: s.id, Client: s.clientAddr,
		Path: s.path, Query: s.query, Subprotocol: s.proto, By: end.by, Why: end.why,
		Code: int(end.code), Reason: end.reason, Duration: time.Since(s.start),
		ClientCode: closeCode(s.client.closeInfo.Load()), UpstreamCode: closeCode(s.upstream.closeInfo.Load())})
	s.p.removeSession(s)
}

// logEnd writes the session's last line.
func (s *session) logEnd(end endInfo) {
	ce := s.p.log.Check(zap.InfoLevel, "session ended")
	if ce == nil {
		return
	}
	p := fieldPool.Get().(*[]zap.Field)
	fields := append(s.fields((*p)[:0]),
		zap.String("subprotocol", s.proto),
		zap.Duration("duration", time.Since(s.start)),
		zap.Uint64("client_frames", s.client.frames.Load()),
		zap.Uint64("client_messages", s.client.messages.Load()),
		zap.Uint64("client_bytes", s.client.bytes.Load()),
		zap.Uint64("upstream_frames", s.upstream.frames.Load()),
		zap.Uint64("upstream_messages", s.upstream.messages.Load()),
		zap.Uint64("upstream_bytes", s.upstream.bytes.Load()),
		zap.String("closed_by", end.by),
		zap.String("why", end.why),
	)
	if end.code != 0 {
		fields = append(fields, zap.Int("close_code", int(end.code)), zap.String("close_reason", end.reason))
	}
	ce.Write(fields...)
	putFields(p, fields)
}

// stopTimers stops every timer of the session and its rules, and returns
// how the session ended.
func (s *session) stopTimers() endInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range append([]*time.Timer{s.timer, s.idle}, s.timers...) {
		if t != nil {
			t.Stop()
		}
	}
	for _, sr := range *s.rules.Load() {
		if sr.timer != nil {
			sr.timer.Stop()
		}
	}
	return s.end
}

// log writes a line at lvl, if lvl is enabled, with the session's fields
// (session, client, path) ahead of its own. The fields go into the line as
// it is written rather than into a logger of the session's: an idle
// session holds no encoder, and a line's fields are gathered in a pooled
// slice rather than in a copy of the logger and its encoder.
func (s *session) log(lvl zapcore.Level, msg string, fields ...zap.Field) {
	ce := s.p.log.Check(lvl, msg)
	if ce == nil {
		return
	}
	s.write(ce, fields)
}

// write writes ce with the session's fields ahead of fields, gathered in
// a pooled slice: zap's cores encode the fields before Write returns.
func (s *session) write(ce *zapcore.CheckedEntry, fields []zap.Field) {
	p := fieldPool.Get().(*[]zap.Field)
	all := append(s.fields((*p)[:0]), fields...)
	ce.Write(all...)
	putFields(p, all)
}

// fields appends the session's own fields (session, client, path), which
// every line of it carries first, to dst.
func (s *session) fields(dst []zap.Field) []zap.Field {
	return append(dst, zap.Uint64("session", s.id), zap.String("client", s.clientAddr), zap.String("path", s.path))
}

// fieldPool holds the slices a line's fields are gathered in.
var fieldPool = sync.Pool{New: func() any { f := make([]zap.Field, 0, 16); return &f }}

// putFields gives a slice taken from fieldPool back, emptied of what its
// fields point to.
func putFields(p *[]zap.Field, used []zap.Field) {
	clear(used)
	*p = used[:0]
	fieldPool.Put(p)
}

// setEnd records who ended the session, if nobody has yet.
func (s *session) setEnd(by, why string, code ws.StatusCode, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.end.by == "" {
		s.end = endInfo{by: by, why: why, code: code, reason: reason}
	}
}

// arm ends the session after d unless it has ended by then. The first
// deadline armed stands.
func (s *session) arm(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timer == nil {
		s.timer = time.AfterFunc(d, func() {
			s.setEnd("proxy", "close handshake timed out", 0, "")
			s.abort()
		})
	}
}

// closeBoth sends a close frame of the proxy's own to both sides and waits
// for their answers (at most closeGrace).
func (s *session) closeBoth(code ws.StatusCode, reason, why string) {
	s.offLane()
	s.setEnd("proxy", why, code, reason)
	s.closing.Store(true)
	s.arm(closeGrace)
	s.sendClose(s.client, code, reason)
	s.sendClose(s.upstream, code, reason)
	s.maybeFinish()
}

// fail answers a peer that broke the protocol: it gets code and reason, the
// other side 1001.
func (s *session) fail(src *peer, code ws.StatusCode, reason string) {
	s.log(zap.WarnLevel, "protocol violation", zap.Stringer("by", src.side), zap.String("violation", reason))
	s.setEnd(src.side.String(), "protocol violation: "+reason, code, reason)
	s.closing.Store(true)
	s.arm(closeGrace)
	s.sendClose(src, code, reason)
	s.sendClose(s.peers(src), closeGoingAway, src.side.String()+" failed")
	s.maybeFinish()
}

func (s *session) sendClose(to *peer, code ws.StatusCode, reason string) {
	if to.gotClose.Load() || to.gone.Load() {
		return
	}
	to.queueClose(closeFrame(to.side, code, reason))
}

// maybeFinish closes both connections once each side has both sent and
// received a close frame, or is gone (RFC 6455 section 7.1.1: the
// server, which the proxy is to its client, closes TCP first).
func (s *session) maybeFinish() {
	if s.closeHandshakeDone() {
		s.abort()
	}
}

// closeHandshakeDone reports whether each side has both sent and received
// a close frame, or is gone.
func (s *session) closeHandshakeDone() bool {
	done := func(p *peer) bool {
		return p.gone.Load() || (p.sentClose.Load() && p.gotClose.Load())
	}
	return done(s.client) && done(s.upstream)
}

// abort closes both connections; the copiers then end.
func (s *session) abort() {
	s.offLane()
	if s.finished.Swap(true) {
		return
	}
	close(s.done)
	// Parked copiers leave the poller before their sockets are closed,
	// and then run to their end.
	var parked []*copier
	for _, c := range s.copiers {
		if c != nil && s.unpark(c) { // none if it ended on its loop
			parked = append(parked, c)
		}
	}
	s.client.conn.Close()
	s.upstream.conn.Close()
	for _, c := range parked {
		go c.run()
	}
}

// checkIdle returns the idle timer's function: it ends the session with
// 1001 when no frame has passed since the last check, and otherwise looks
// again a quarter of the timeout later.
func (s *session) checkIdle(lastFrames uint64, since time.Time) func() {
	return func() {
		d := s.p.IdleTimeout
		n := s.client.frames.Load() + s.upstream.frames.Load()
		now := time.Now()
		if n != lastFrames {
			lastFrames, since = n, now
		}
		if now.Sub(since) >= d {
			s.closeBoth(closeGoingAway, "idle timeout", "idle timeout")
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.finished.Load() {
			s.idle = time.AfterFunc(min(d/4, d-now.Sub(since))+time.Millisecond, s.checkIdle(lastFrames, since))
		}
	}
}
