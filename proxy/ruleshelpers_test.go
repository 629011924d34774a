package proxy_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	gorilla "github.com/gorilla/websocket"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/wschaos/wschaos/proxy"
	"github.com/wschaos/wschaos/rules"
)

// ptr returns a pointer to v, for the optional fields of a rules.Spec.
func ptr[T any](v T) *T { return &v }

// compileRules checks specs as a configuration file would and fails the
// test on any error.
func compileRules(t testing.TB, useTLS bool, specs ...rules.Spec) *rules.Set {
	t.Helper()
	set, errs := rules.Compile(specs, rules.Options{TLS: useTLS})
	if len(errs) > 0 {
		t.Fatalf("compile rules: got %v; want no errors", errs)
	}
	return set
}

// eventLog records a proxy's events; every wait on it is bounded.
type eventLog struct {
	mu     sync.Mutex
	events []proxy.Event
}

// newEventLog returns an event log whose invariants are checked when the
// test ends: create it before the proxy, so that the check runs after the
// proxy's Close, when every session has ended.
func newEventLog(t testing.TB) *eventLog {
	t.Helper()
	l := &eventLog{}
	t.Cleanup(func() { l.checkInvariants(t) })
	return l
}

func (l *eventLog) Event(e proxy.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
}

func (l *eventLog) snapshot() []proxy.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

// filter returns the events of kind for session id (0: any session).
func filter(evs []proxy.Event, kind proxy.EventKind, id uint64) []proxy.Event {
	var out []proxy.Event
	for _, e := range evs {
		if e.Kind == kind && (id == 0 || e.Session == id) {
			out = append(out, e)
		}
	}
	return out
}

func (l *eventLog) of(kind proxy.EventKind, id uint64) []proxy.Event {
	return filter(l.snapshot(), kind, id)
}

// waitFor waits until ok holds for the events recorded so far and returns
// them.
func (l *eventLog) waitFor(t testing.TB, what string, ok func([]proxy.Event) bool) []proxy.Event {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		evs := l.snapshot()
		if ok(evs) {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("events: got %d events without %s within %v; want %s\n%v", len(evs), what, testTimeout, what, evs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitN waits for n events of kind for session id (0: any) and returns
// them.
func (l *eventLog) waitN(t testing.TB, kind proxy.EventKind, id uint64, n int) []proxy.Event {
	t.Helper()
	evs := l.waitFor(t, "enough "+string(kind)+" events", func(evs []proxy.Event) bool {
		return len(filter(evs, kind, id)) >= n
	})
	return filter(evs, kind, id)
}

// waitOne waits for the first event of kind for session id (0: any).
func (l *eventLog) waitOne(t testing.TB, kind proxy.EventKind, id uint64) proxy.Event {
	t.Helper()
	return l.waitN(t, kind, id, 1)[0]
}

// checkInvariants checks what the proxy promises about its events: every
// upgrade attempt is refused or opened, once, and every opened session has
// exactly one closed event.
func (l *eventLog) checkInvariants(t testing.TB) {
	t.Helper()
	evs := l.snapshot()
	opened, closed, refused := map[uint64]int{}, map[uint64]int{}, map[uint64]int{}
	for _, e := range evs {
		switch e.Kind {
		case proxy.EventOpened:
			opened[e.Session]++
		case proxy.EventClosed:
			closed[e.Session]++
		case proxy.EventRefused:
			refused[e.Session]++
		}
	}
	for id, n := range opened {
		if n != 1 || closed[id] != 1 || refused[id] != 0 {
			t.Errorf("session %d: got %d opened, %d closed, %d refused events; want 1, 1, 0", id, n, closed[id], refused[id])
		}
	}
	for id, n := range closed {
		if opened[id] == 0 {
			t.Errorf("session %d: got %d closed events and no opened one; want an opened event first", id, n)
		}
	}
	for id, n := range refused {
		if n != 1 {
			t.Errorf("attempt %d: got %d refused events; want 1", id, n)
		}
	}
}

// startRules serves a Proxy with set in front of upstream, recording its
// events; opts adjust it further before Serve.
func startRules(t testing.TB, upstream *url.URL, set *rules.Set, opts ...func(*proxy.Proxy)) (string, *proxy.Proxy, *eventLog) {
	t.Helper()
	ev := newEventLog(t)
	all := append([]func(*proxy.Proxy){func(p *proxy.Proxy) {
		p.Rules = set
		p.Events = ev
		p.Seed = 1
	}}, opts...)
	addr, p := startProxy(t, upstream, all...)
	// Serve runs in a goroutine: wait until it has loaded the rules, which
	// EnableRule and RuleInfos look at.
	waitUntil(t, "the proxy is ready", p.Ready)
	return addr, p, ev
}

// proxyStacks returns the stacks of the goroutines running proxy code.
func proxyStacks() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "wschaos/proxy.") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// logWriter passes a proxy's log lines to the test's log until the test
// ends, and drops them after that, when a proxy that failed to close may
// still log.
type logWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *logWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(b), "\n"))
	}
	return len(b), nil
}

func (w *logWriter) Sync() error { return nil }

// testLogger returns a logger that writes to the test's log while the
// test runs. Create it before the proxy whose logger it is.
func testLogger(t testing.TB) *zap.Logger {
	t.Helper()
	w := &logWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.done = true
	})
	enc := zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
	return zap.New(zapcore.NewCore(enc, w, zap.InfoLevel))
}

// rulePair opens one session through a proxy with the rules of specs in
// front of a raw upstream and returns both raw ends, the proxy, its events
// and the session's id.
func rulePair(t testing.TB, specs []rules.Spec, opts ...func(*proxy.Proxy)) (client, upstream *rawConn, p *proxy.Proxy, ev *eventLog, id uint64) {
	t.Helper()
	up := startRawUpstream(t, rawUpstreamOptions{})
	addr, p, ev := startRules(t, up.URL, compileRules(t, false, specs...), opts...)
	client, _ = dialRaw(t, addr, nil, nil)
	upstream = up.accept(t)
	id = ev.waitOne(t, proxy.EventOpened, 0).Session
	return client, upstream, p, ev, id
}

// observedLogger returns a logger that writes to the test's log and keeps
// every entry for the test to look at.
func observedLogger(t testing.TB) (*zap.Logger, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	return zap.New(zapcore.NewTee(testLogger(t).Core(), core)), logs
}

// waitUntil waits, bounded, until ok holds.
func waitUntil(t testing.TB, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: got not yet after %v; want it done", what, testTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitLogs waits for n entries with msg and returns them all.
func waitLogs(t testing.TB, logs *observer.ObservedLogs, msg string, n int) []observer.LoggedEntry {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		entries := logs.FilterMessage(msg).All()
		if len(entries) >= n {
			return entries
		}
		if time.Now().After(deadline) {
			t.Fatalf("log %q: got %d entries within %v; want %d", msg, len(entries), testTimeout, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// countingListener counts the connections accepted through it.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// startCountingEcho starts a gorilla echo upstream and returns its URL and
// the count of TCP connections it accepted.
func startCountingEcho(t testing.TB) (*url.URL, *atomic.Int64) {
	t.Helper()
	hs := &handlers{}
	h := gorillaHandler(gorilla.Upgrader{}, gorillaEcho, nil)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hs.wg.Add(1)
		defer hs.wg.Done()
		h(hs, w, r)
	}))
	cl := &countingListener{Listener: srv.Listener}
	srv.Listener = cl
	srv.Start()
	t.Cleanup(func() {
		srv.Close()
		hs.closeAndWait(t)
	})
	return wsURLOf(t, srv), &cl.n
}

// openRaw connects from the local address (empty: any) to a ws:// URL,
// writes an upgrade request with extra headers and returns the connection
// and the response, whatever its status. The connection is closed when the
// test ends.
func openRaw(t testing.TB, target, local string, extra http.Header) (*rawConn, *http.Response) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatalf("parse %q: got %v; want nil", target, err)
	}
	d := net.Dialer{Timeout: testTimeout}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	conn, err := d.Dial("tcp", u.Host)
	if err != nil {
		t.Fatalf("dial %s from %q: got %v; want nil", u.Host, local, err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &rawConn{Conn: conn, br: bufio.NewReader(conn), client: true}
	c.write(t, upgradeRequest(t, target, extra))
	c.SetReadDeadline(time.Now().Add(testTimeout))
	resp, err := http.ReadResponse(c.br, nil)
	c.SetReadDeadline(time.Time{})
	if err != nil {
		t.Fatalf("read upgrade response: got %v; want nil", err)
	}
	return c, resp
}

// outcome is what a raw client saw first after its upgrade, having sent
// one text message: the echo, or a close frame of a rule.
type outcome struct {
	echoed bool
	code   ws.StatusCode // of the close frame, when not echoed
}

// probe sends a text message on c and reads the first frame back: an echo
// or a close frame.
func probe(t testing.TB, c *rawConn, msg string) outcome {
	t.Helper()
	c.writeFrame(t, true, ws.OpText, []byte(msg))
	f := c.readFrame(t)
	switch f.Header.OpCode {
	case ws.OpText:
		if string(f.Payload) != msg {
			t.Fatalf("echo: got %q; want %q", f.Payload, msg)
		}
		return outcome{echoed: true}
	case ws.OpClose:
		code, _ := ws.ParseCloseFrameData(f.Payload)
		return outcome{code: code}
	}
	t.Fatalf("first frame: got opcode %v; want text or close", f.Header.OpCode)
	return outcome{}
}

// answerClose answers a close frame f with the same payload, as RFC 6455
// section 5.5.1 asks.
func (c *rawConn) answerClose(t testing.TB, f ws.Frame) {
	t.Helper()
	c.writeFrame(t, true, ws.OpClose, f.Payload)
}

// readCloseFrame reads the next frame, which must be a close frame, and
// returns it with its code and reason.
func (c *rawConn) readCloseFrame(t testing.TB) (ws.Frame, ws.StatusCode, string) {
	t.Helper()
	f := c.readFrame(t)
	if f.Header.OpCode != ws.OpClose {
		t.Fatalf("opcode: got %v (payload %q); want close", f.Header.OpCode, f.Payload)
	}
	code, reason := ws.ParseCloseFrameData(f.Payload)
	return f, code, reason
}

// expectSilence checks that nothing arrives on c for d, the connection
// staying open.
func (c *rawConn) expectSilence(t testing.TB, d time.Duration, who string) {
	t.Helper()
	f, err := c.tryReadFrame(d)
	var ne net.Error
	switch {
	case err == nil:
		t.Errorf("%s: got a frame (opcode %v, payload %q) within %v; want nothing", who, f.Header.OpCode, f.Payload, d)
	case errors.As(err, &ne) && ne.Timeout():
	default:
		t.Errorf("%s: got %v within %v; want nothing and the connection open", who, err, d)
	}
}

// expectText reads a data frame and checks its payload.
func (c *rawConn) expectText(t testing.TB, who, want string) {
	t.Helper()
	f := c.readFrame(t)
	if f.Header.OpCode != ws.OpText || string(f.Payload) != want {
		t.Fatalf("%s: got opcode %v payload %q; want text %q", who, f.Header.OpCode, f.Payload, want)
	}
}

// isResetErr reports whether a read error is a TCP reset.
func isResetErr(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// selfSigned returns a TLS certificate for 127.0.0.1 and a pool that trusts
// it.
func selfSigned(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate key: got %v; want nil", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "wschaos test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("create certificate: got %v; want nil", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse certificate: got %v; want nil", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// readBytes reads exactly n bytes from c within testTimeout.
func (c *rawConn) readBytes(t testing.TB, n int) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(testTimeout))
	defer c.SetReadDeadline(time.Time{})
	b := make([]byte, n)
	if _, err := io.ReadFull(c.br, b); err != nil {
		t.Fatalf("read %d bytes: got %v; want nil", n, err)
	}
	return b
}
