package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gobwas/ws"
	gorilla "github.com/gorilla/websocket"

	"github.com/wschaos/wschaos/proxy"
)

// testTimeout bounds every wait in the tests: no step of a passing test
// comes near it, and a failing one ends instead of hanging.
const testTimeout = 5 * time.Second

// testContext returns a context that ends after testTimeout or with the test.
func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// listenLocal listens on an ephemeral loopback port.
func listenLocal(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: got %v; want nil", err)
	}
	return ln
}

// startProxy serves a Proxy in front of upstream on a loopback port. opts
// adjust the Proxy before Serve. It returns the ws:// URL of the proxy.
// When the test ends the proxy is closed within a bound: a proxy that does
// not close fails the test, with the sessions it still holds and the
// stacks of its goroutines, instead of hanging the package; Serve's return
// is checked too.
func startProxy(t testing.TB, upstream *url.URL, opts ...func(*proxy.Proxy)) (string, *proxy.Proxy) {
	t.Helper()
	return startProxyOn(t, listenLocal(t), upstream, opts...)
}

// startProxyOn is startProxy serving on ln.
func startProxyOn(t testing.TB, ln net.Listener, upstream *url.URL, opts ...func(*proxy.Proxy)) (string, *proxy.Proxy) {
	t.Helper()
	p := &proxy.Proxy{
		Upstream:         upstream,
		HandshakeTimeout: testTimeout,
		Logger:           testLogger(t),
		Loops:            testLoops(),
	}
	for _, o := range opts {
		o(p)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	t.Cleanup(func() {
		closed := make(chan error, 1)
		go func() { closed <- p.Close() }()
		select {
		case err := <-closed:
			if err != nil {
				t.Errorf("Close: got %v; want nil", err)
			}
		case <-time.After(testTimeout):
			t.Errorf("Close: got no return within %v; want nil (still open: %+v; stats %+v)\n%s",
				testTimeout, p.Sessions(), p.Stats(), proxyStacks())
			return
		}
		select {
		case err := <-served:
			if !errors.Is(err, proxy.ErrServerClosed) {
				t.Errorf("Serve: got %v; want %v", err, proxy.ErrServerClosed)
			}
		case <-time.After(testTimeout):
			t.Errorf("Serve: got no return within %v of Close; want %v", testTimeout, proxy.ErrServerClosed)
		}
	})
	return "ws://" + ln.Addr().String(), p
}

// httpURL turns a ws:// URL into the http:// URL of the same origin.
func httpURL(wsURL string) string {
	return "http" + strings.TrimPrefix(wsURL, "ws")
}

// wsURLOf returns the ws:// (or wss://) URL of an httptest server.
func wsURLOf(t testing.TB, srv *httptest.Server) *url.URL {
	t.Helper()
	u, err := url.Parse("ws" + strings.TrimPrefix(srv.URL, "http"))
	if err != nil {
		t.Fatalf("parse %q: got %v; want nil", srv.URL, err)
	}
	return u
}

// handlers tracks the goroutines that serve WebSocket connections of a test
// server, so that the test can wait for them to end.
type handlers struct {
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[io.Closer]struct{}
}

func (h *handlers) add(c io.Closer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conns == nil {
		h.conns = make(map[io.Closer]struct{})
	}
	h.conns[c] = struct{}{}
}

func (h *handlers) remove(c io.Closer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.conns, c)
}

// closeAndWait closes the connections still open and waits, bounded, for
// their handlers to return.
func (h *handlers) closeAndWait(t testing.TB) {
	t.Helper()
	h.mu.Lock()
	for c := range h.conns {
		c.Close()
	}
	h.mu.Unlock()
	done := make(chan struct{})
	go func() {
		h.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(testTimeout):
		t.Errorf("server handlers: got still running after %v; want returned", testTimeout)
	}
}

// serveHTTP starts an httptest server on loopback whose handlers are waited
// for when the test ends.
func serveHTTP(t testing.TB, h func(hs *handlers, w http.ResponseWriter, r *http.Request)) *httptest.Server {
	t.Helper()
	return newTestServer(t, false, h)
}

// serveHTTPS is serveHTTP with TLS; the server's Client() trusts it.
func serveHTTPS(t testing.TB, h func(hs *handlers, w http.ResponseWriter, r *http.Request)) *httptest.Server {
	t.Helper()
	return newTestServer(t, true, h)
}

func newTestServer(t testing.TB, useTLS bool, h func(hs *handlers, w http.ResponseWriter, r *http.Request)) *httptest.Server {
	t.Helper()
	hs := &handlers{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hs.wg.Add(1)
		defer hs.wg.Done()
		h(hs, w, r)
	}))
	if useTLS {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(func() {
		srv.Close()
		hs.closeAndWait(t)
	})
	return srv
}

// gorillaHandler upgrades with up and runs handle on each WebSocket
// connection; plain HTTP requests are answered by plain, if it is not nil.
func gorillaHandler(up gorilla.Upgrader, handle func(c *gorilla.Conn, r *http.Request), plain http.HandlerFunc) func(hs *handlers, w http.ResponseWriter, r *http.Request) {
	if up.CheckOrigin == nil {
		up.CheckOrigin = func(*http.Request) bool { return true }
	}
	return func(hs *handlers, w http.ResponseWriter, r *http.Request) {
		if !gorilla.IsWebSocketUpgrade(r) {
			if plain == nil {
				http.Error(w, "not a websocket request", http.StatusBadRequest)
				return
			}
			plain(w, r)
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		hs.add(c)
		defer func() {
			hs.remove(c)
			c.Close()
		}()
		handle(c, r)
	}
}

// startGorillaServer starts a gorilla/websocket upstream that runs handle on
// each WebSocket connection. Plain HTTP requests are answered by plain, if
// it is not nil.
func startGorillaServer(t testing.TB, up gorilla.Upgrader, handle func(c *gorilla.Conn, r *http.Request), plain http.HandlerFunc) *url.URL {
	t.Helper()
	return wsURLOf(t, serveHTTP(t, gorillaHandler(up, handle, plain)))
}

// gorillaEcho sends every message back as it came.
func gorillaEcho(c *gorilla.Conn, _ *http.Request) {
	for {
		typ, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		if err := c.WriteMessage(typ, msg); err != nil {
			return
		}
	}
}

// startGorillaEcho starts a gorilla/websocket echo upstream.
func startGorillaEcho(t testing.TB) *url.URL {
	t.Helper()
	return startGorillaServer(t, gorilla.Upgrader{}, gorillaEcho, nil)
}

// startCoderServer starts a coder/websocket upstream that runs handle on
// each WebSocket connection.
func startCoderServer(t testing.TB, opts coder.AcceptOptions, handle func(c *coder.Conn, r *http.Request)) *url.URL {
	t.Helper()
	opts.InsecureSkipVerify = true
	srv := serveHTTP(t, func(hs *handlers, w http.ResponseWriter, r *http.Request) {
		c, err := coder.Accept(w, r, &opts)
		if err != nil {
			return
		}
		closer := &coderCloser{c}
		hs.add(closer)
		defer func() {
			hs.remove(closer)
			c.CloseNow()
		}()
		c.SetReadLimit(maxTestMessage)
		handle(c, r)
	})
	return wsURLOf(t, srv)
}

// coderCloser closes a coder connection without a close handshake.
type coderCloser struct{ c *coder.Conn }

func (c *coderCloser) Close() error { return c.c.CloseNow() }

// maxTestMessage is the read limit of the coder peers: above the largest
// message the tests send.
const maxTestMessage = 32 << 20

// coderEcho sends every message back as it came.
func coderEcho(c *coder.Conn, r *http.Request) {
	ctx := r.Context()
	for {
		typ, rd, err := c.Reader(ctx)
		if err != nil {
			return
		}
		w, err := c.Writer(ctx, typ)
		if err != nil {
			return
		}
		if _, err := io.Copy(w, rd); err != nil {
			return
		}
		if err := w.Close(); err != nil {
			return
		}
	}
}

// startCoderEcho starts a coder/websocket echo upstream.
func startCoderEcho(t testing.TB) *url.URL {
	t.Helper()
	return startCoderServer(t, coder.AcceptOptions{}, coderEcho)
}

// dialGorilla opens a gorilla/websocket client connection; it is closed
// when the test ends. mod adjusts the dialer.
func dialGorilla(t testing.TB, u string, h http.Header, mod ...func(*gorilla.Dialer)) (*gorilla.Conn, *http.Response) {
	t.Helper()
	d := gorilla.Dialer{HandshakeTimeout: testTimeout}
	for _, m := range mod {
		m(&d)
	}
	c, resp, err := d.DialContext(testContext(t), u, h)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("gorilla dial %s: got %v (status %d); want nil", u, err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c, resp
}

// dialCoder opens a coder/websocket client connection; it is closed when
// the test ends.
func dialCoder(t testing.TB, u string, opts *coder.DialOptions) (*coder.Conn, *http.Response) {
	t.Helper()
	if opts == nil {
		opts = &coder.DialOptions{}
	}
	if opts.HTTPClient == nil {
		tr := &http.Transport{Proxy: nil}
		t.Cleanup(tr.CloseIdleConnections)
		opts.HTTPClient = &http.Client{Transport: tr, Timeout: testTimeout}
	}
	c, resp, err := coder.Dial(testContext(t), u, opts)
	if err != nil {
		t.Fatalf("coder dial %s: got %v; want nil", u, err)
	}
	c.SetReadLimit(maxTestMessage)
	t.Cleanup(func() { c.CloseNow() })
	return c, resp
}

// rawConn is one end of a WebSocket connection driven frame by frame. A
// client end masks what it writes; every read is bounded by testTimeout.
type rawConn struct {
	net.Conn
	br     *bufio.Reader
	client bool
	req    *http.Request // the upgrade request, at a raw upstream
}

// frame returns the bytes of a frame with the given header fields as this
// end sends it: masked with a fixed key when it is a client.
func (c *rawConn) frame(fin bool, op ws.OpCode, payload []byte) []byte {
	return buildFrame(ws.Header{Fin: fin, OpCode: op, Masked: c.client, Mask: testMask}, payload)
}

var testMask = [4]byte{0x37, 0xfa, 0x21, 0x3d}

// buildFrame compiles a frame: h's Length is set from payload, which is
// masked with h.Mask when h.Masked.
func buildFrame(h ws.Header, payload []byte) []byte {
	h.Length = int64(len(payload))
	var b bytes.Buffer
	b.Grow(ws.MaxHeaderSize + len(payload))
	if err := ws.WriteHeader(&b, h); err != nil {
		panic(err)
	}
	p := append([]byte(nil), payload...)
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	b.Write(p)
	return b.Bytes()
}

// write writes raw bytes with a bounded deadline.
func (c *rawConn) write(t testing.TB, b []byte) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(testTimeout))
	if _, err := c.Write(b); err != nil {
		t.Fatalf("write: got %v; want nil", err)
	}
}

// writeFrame writes one frame.
func (c *rawConn) writeFrame(t testing.TB, fin bool, op ws.OpCode, payload []byte) {
	t.Helper()
	c.write(t, c.frame(fin, op, payload))
}

// writeClose writes a close frame with code and reason.
func (c *rawConn) writeClose(t testing.TB, code ws.StatusCode, reason string) {
	t.Helper()
	c.writeFrame(t, true, ws.OpClose, ws.NewCloseFrameBody(code, reason))
}

// tryReadFrame reads one frame within d. The payload is unmasked; the
// header is left as it came.
func (c *rawConn) tryReadFrame(d time.Duration) (ws.Frame, error) {
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	h, err := ws.ReadHeader(c.br)
	if err != nil {
		return ws.Frame{}, err
	}
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return ws.Frame{Header: h}, err
	}
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	return ws.Frame{Header: h, Payload: p}, nil
}

// readFrame reads one frame and checks its masking: a client end must get
// unmasked frames and an upstream end masked ones (RFC 6455 section 5.1).
func (c *rawConn) readFrame(t testing.TB) ws.Frame {
	t.Helper()
	f, err := c.tryReadFrame(testTimeout)
	if err != nil {
		t.Fatalf("read frame: got %v; want nil", err)
	}
	if f.Header.Masked == c.client {
		t.Fatalf("frame masked: got %v; want %v", f.Header.Masked, !c.client)
	}
	return f
}

// expectClose reads frames up to a close frame and checks its code and that
// its reason contains word. Data frames before it are an error.
func (c *rawConn) expectClose(t testing.TB, code ws.StatusCode, word string) {
	t.Helper()
	f := c.readFrame(t)
	if f.Header.OpCode != ws.OpClose {
		t.Fatalf("opcode: got %v (payload %q); want close", f.Header.OpCode, f.Payload)
	}
	gotCode, reason := ws.ParseCloseFrameData(f.Payload)
	if gotCode != code {
		t.Errorf("close code: got %v (reason %q); want %v", gotCode, reason, code)
	}
	if !strings.Contains(strings.ToLower(reason), strings.ToLower(word)) {
		t.Errorf("close reason: got %q; want it to contain %q", reason, word)
	}
}

// expectEnd reads until the connection ends and returns the read error,
// which is io.EOF for a FIN. Frames read before that are skipped.
func (c *rawConn) expectEnd(t testing.TB) error {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(testTimeout))
	_, err := io.Copy(io.Discard, c.br)
	if err == nil {
		err = io.EOF
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection: got still open after %v; want closed", testTimeout)
	}
	return err
}

// acceptKey is the Sec-WebSocket-Accept value for key (RFC 6455 section 4.2.2).
func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// testKey is the Sec-WebSocket-Key raw clients send.
const testKey = "dGhlIHNhbXBsZSBub25jZQ=="

// upgradeRequest returns the bytes of an upgrade request for target (a
// ws:// URL) with extra headers after the handshake's own.
func upgradeRequest(t testing.TB, target string, extra http.Header) []byte {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatalf("parse %q: got %v; want nil", target, err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\n", u.RequestURI(), u.Host)
	if extra.Get("Connection") == "" {
		b.WriteString("Connection: Upgrade\r\n")
	}
	fmt.Fprintf(&b, "Upgrade: websocket\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", testKey)
	extra.Write(&b)
	b.WriteString("\r\n")
	return b.Bytes()
}

// dialRaw connects to a ws:// URL, writes the upgrade request followed by
// pipelined (in the same write) and checks the 101 answer. The connection
// is closed when the test ends.
func dialRaw(t testing.TB, target string, extra http.Header, pipelined []byte) (*rawConn, *http.Response) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatalf("parse %q: got %v; want nil", target, err)
	}
	d := net.Dialer{Timeout: testTimeout}
	conn, err := d.Dial("tcp", u.Host)
	if err != nil {
		t.Fatalf("dial %s: got %v; want nil", u.Host, err)
	}
	return upgradeRaw(t, conn, target, extra, pipelined)
}

// upgradeRaw is dialRaw on conn, a connection to target's host dialed
// already.
func upgradeRaw(t testing.TB, conn net.Conn, target string, extra http.Header, pipelined []byte) (*rawConn, *http.Response) {
	t.Helper()
	t.Cleanup(func() { conn.Close() })
	c := &rawConn{Conn: conn, br: bufio.NewReader(conn), client: true}
	c.write(t, append(upgradeRequest(t, target, extra), pipelined...))
	c.SetReadDeadline(time.Now().Add(testTimeout))
	resp, err := http.ReadResponse(c.br, nil)
	c.SetReadDeadline(time.Time{})
	if err != nil {
		t.Fatalf("read upgrade response: got %v; want nil", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		t.Fatalf("upgrade status: got %d (%q); want 101", resp.StatusCode, body)
	}
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), acceptKey(testKey); got != want {
		t.Fatalf("Sec-WebSocket-Accept: got %q; want %q", got, want)
	}
	return c, resp
}

// rawUpstream is an upstream whose WebSocket connections the test drives
// frame by frame.
type rawUpstream struct {
	URL   *url.URL
	conns chan *rawConn
}

// rawUpstreamOptions say how a raw upstream answers upgrades.
type rawUpstreamOptions struct {
	protocol   string // Sec-WebSocket-Protocol of the answer, if not empty
	extensions string // Sec-WebSocket-Extensions of the answer, if not empty
	waiting    int    // connections held for accept before more are closed; 16 if 0
}

// startRawUpstream starts an upstream that answers every upgrade with 101
// and hands the connection to the test. It and its connections are closed
// when the test ends.
func startRawUpstream(t testing.TB, opts rawUpstreamOptions) *rawUpstream {
	t.Helper()
	ln := listenLocal(t)
	if opts.waiting == 0 {
		opts.waiting = 16
	}
	up := &rawUpstream{
		URL:   &url.URL{Scheme: "ws", Host: ln.Addr().String()},
		conns: make(chan *rawConn, opts.waiting),
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			c := &rawConn{Conn: conn, br: bufio.NewReader(conn)}
			conn.SetDeadline(time.Now().Add(testTimeout))
			req, err := http.ReadRequest(c.br)
			if err != nil {
				conn.Close()
				continue
			}
			c.req = req
			var b strings.Builder
			fmt.Fprintf(&b, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n",
				acceptKey(req.Header.Get("Sec-WebSocket-Key")))
			if opts.protocol != "" {
				fmt.Fprintf(&b, "Sec-WebSocket-Protocol: %s\r\n", opts.protocol)
			}
			if opts.extensions != "" {
				fmt.Fprintf(&b, "Sec-WebSocket-Extensions: %s\r\n", opts.extensions)
			}
			b.WriteString("\r\n")
			if _, err := io.WriteString(conn, b.String()); err != nil {
				conn.Close()
				continue
			}
			conn.SetDeadline(time.Time{})
			select {
			case up.conns <- c:
			default:
				conn.Close()
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return up
}

// accept returns the next connection the proxy opened to the upstream.
func (u *rawUpstream) accept(t testing.TB) *rawConn {
	t.Helper()
	select {
	case c := <-u.conns:
		return c
	case <-time.After(testTimeout):
		t.Fatalf("upstream connection: got none within %v; want one", testTimeout)
		return nil
	}
}

// rawPair opens a session through a proxy in front of a raw upstream and
// returns both raw ends.
func rawPair(t testing.TB, opts ...func(*proxy.Proxy)) (client, upstream *rawConn) {
	t.Helper()
	up := startRawUpstream(t, rawUpstreamOptions{})
	addr, _ := startProxy(t, up.URL, opts...)
	client, _ = dialRaw(t, addr, nil, nil)
	return client, up.accept(t)
}

// eachDirection runs test as two subtests, "from client" and "from
// upstream", each on a fresh session through a proxy in front of a raw
// upstream: src is the raw end that sends, dst the one that receives.
func eachDirection(t *testing.T, test func(t *testing.T, src, dst *rawConn)) {
	t.Helper()
	for _, from := range []string{"client", "upstream"} {
		t.Run("from "+from, func(t *testing.T) {
			client, upstream := rawPair(t)
			if from == "upstream" {
				test(t, upstream, client)
				return
			}
			test(t, client, upstream)
		})
	}
}

// checkGoroutines fails the test if, when it ends and after every cleanup
// registered later has run, more goroutines are running than now. It
// retries for a while, since goroutines take a moment to end.
func checkGoroutines(t *testing.T) {
	t.Helper()
	// Goroutines of earlier tests may still be ending: count once they
	// stop doing so, or after a second.
	before := runtime.NumGoroutine()
	for settle := time.Now().Add(time.Second); time.Now().Before(settle); {
		time.Sleep(50 * time.Millisecond)
		n := runtime.NumGoroutine()
		if n >= before {
			break
		}
		before = n
	}
	t.Cleanup(func() {
		deadline := time.Now().Add(testTimeout)
		n := runtime.NumGoroutine()
		for n > before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			n = runtime.NumGoroutine()
		}
		if n > before {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("goroutines: got %d; want at most %d\n%s", n, before, buf)
		}
	})
}

// noProxyClient is an HTTP client that talks to loopback directly; its idle
// connections are closed when the test ends.
func noProxyClient(t testing.TB) *http.Client {
	t.Helper()
	tr := &http.Transport{Proxy: nil}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: testTimeout}
}

// scriptedUpstream is an upstream whose answer to each upgrade request the
// test writes itself: answer runs on the accepted connection, the request
// read, and may wait on done, closed when the test ends. It returns the
// upstream's URL and a channel that gets each request once it has been
// read.
func scriptedUpstream(t testing.TB, answer func(c net.Conn, req *http.Request, done <-chan struct{})) (*url.URL, <-chan *http.Request) {
	t.Helper()
	ln := listenLocal(t)
	done := make(chan struct{})
	reqs := make(chan *http.Request, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				go func() { <-done; c.Close() }()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				reqs <- req
				answer(c, req, done)
			}()
		}
	}()
	t.Cleanup(func() {
		close(done)
		ln.Close()
	})
	return &url.URL{Scheme: "ws", Host: ln.Addr().String()}, reqs
}
