package proxy_test

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gobwas/ws"
	gorilla "github.com/gorilla/websocket"

	"github.com/wschaos/wschaos/proxy"
)

// recordRequests starts a gorilla upstream that accepts every upgrade with
// up, sends each upgrade request on the returned channel and then echoes.
func recordRequests(t *testing.T, up gorilla.Upgrader) (*url.URL, <-chan *http.Request) {
	t.Helper()
	reqs := make(chan *http.Request, 4)
	u := startGorillaServer(t, up, func(c *gorilla.Conn, r *http.Request) {
		reqs <- r.Clone(r.Context())
		gorillaEcho(c, r)
	}, nil)
	return u, reqs
}

func nextRequest(t *testing.T, reqs <-chan *http.Request) *http.Request {
	t.Helper()
	select {
	case r := <-reqs:
		return r
	case <-time.After(testTimeout):
		t.Fatalf("upstream request: got none within %v; want one", testTimeout)
		return nil
	}
}

func TestSubprotocolChosenByUpstream(t *testing.T) {
	tests := []struct {
		name string
		dial func(t *testing.T, addr string) (chosen string, resp *http.Response)
	}{
		{"gorilla client", func(t *testing.T, addr string) (string, *http.Response) {
			c, resp := dialGorilla(t, addr, nil, func(d *gorilla.Dialer) { d.Subprotocols = []string{"a", "b"} })
			return c.Subprotocol(), resp
		}},
		{"coder client", func(t *testing.T, addr string) (string, *http.Response) {
			c, resp := dialCoder(t, addr, &coder.DialOptions{Subprotocols: []string{"a", "b"}})
			return c.Subprotocol(), resp
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up, reqs := recordRequests(t, gorilla.Upgrader{Subprotocols: []string{"b"}})
			addr, _ := startProxy(t, up)
			chosen, resp := tt.dial(t, addr)
			if chosen != "b" {
				t.Errorf("subprotocol: got %q; want %q", chosen, "b")
			}
			if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "b" {
				t.Errorf("Sec-WebSocket-Protocol answer: got %q; want %q", got, "b")
			}
			r := nextRequest(t, reqs)
			if got, want := proxy.SplitTokens(r.Header.Values("Sec-WebSocket-Protocol")), []string{"a", "b"}; !slices.Equal(got, want) {
				t.Errorf("subprotocols offered upstream: got %q; want %q", got, want)
			}
		})
	}
}

func TestUpgradeRequestReachesUpstream(t *testing.T) {
	endToEnd := http.Header{
		"Cookie":        {"session=abc123; theme=dark"},
		"Authorization": {"Bearer t0ken"},
		"Origin":        {"https://app.example"},
		"User-Agent":    {"wschaos-test/1.0"},
		"X-Custom":      {"custom value"},
	}
	hopByHop := http.Header{
		"Connection":          {"Upgrade, X-Hop"},
		"X-Hop":               {"named by Connection"},
		"Keep-Alive":          {"timeout=5"},
		"Te":                  {"trailers"},
		"Trailer":             {"X-Trailer"},
		"Proxy-Authorization": {"Basic Zm9vOmJhcg=="},
		"Proxy-Connection":    {"keep-alive"},
	}
	tests := []struct {
		name      string
		upstream  string // path and query of the Proxy's Upstream
		request   string // request URI the client asks for
		wantPath  string
		wantQuery string
	}{
		{"bare upstream", "", "/chat/room?x=1&y=two%20words", "/chat/room", "x=1&y=two%20words"},
		{"upstream with path and query", "/base/?k=v", "/chat/room?x=1", "/base/chat/room", "k=v&x=1"},
		{"root", "", "/", "/", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up, reqs := recordRequests(t, gorilla.Upgrader{})
			target, err := url.Parse(up.String() + tt.upstream)
			if err != nil {
				t.Fatalf("parse: got %v; want nil", err)
			}
			addr, _ := startProxy(t, target)
			h := http.Header{}
			for k, vs := range endToEnd {
				h[k] = vs
			}
			for k, vs := range hopByHop {
				h[k] = vs
			}
			dialRaw(t, addr+tt.request, h, nil)
			r := nextRequest(t, reqs)

			if r.URL.Path != tt.wantPath {
				t.Errorf("path: got %q; want %q", r.URL.Path, tt.wantPath)
			}
			if r.URL.RawQuery != tt.wantQuery {
				t.Errorf("query: got %q; want %q", r.URL.RawQuery, tt.wantQuery)
			}
			for k, vs := range endToEnd {
				if got := r.Header.Values(k); !slices.Equal(got, vs) {
					t.Errorf("%s: got %q; want %q", k, got, vs)
				}
			}
			proxyHost := strings.TrimPrefix(addr, "ws://")
			for k, want := range map[string]string{
				"X-Forwarded-For":   "127.0.0.1",
				"X-Forwarded-Proto": "http",
				"X-Forwarded-Host":  proxyHost,
			} {
				if got := r.Header.Values(k); !slices.Equal(got, []string{want}) {
					t.Errorf("%s: got %q; want [%q]", k, got, want)
				}
			}
			for k := range hopByHop {
				if k == "Connection" {
					continue
				}
				if got := r.Header.Values(k); len(got) > 0 {
					t.Errorf("%s: got %q; want it not forwarded", k, got)
				}
			}
			if got := proxy.SplitTokens(r.Header.Values("Connection")); !slices.EqualFunc(got, []string{"Upgrade"}, strings.EqualFold) {
				t.Errorf("Connection: got %q; want [Upgrade]", got)
			}
		})
	}
}

// inflate decompresses a permessage-deflate message payload (RFC 7692
// section 7.2.2).
func inflate(t *testing.T, p []byte) []byte {
	t.Helper()
	r := flate.NewReader(io.MultiReader(bytes.NewReader(p), strings.NewReader("\x00\x00\xff\xff\x01\x00\x00\xff\xff")))
	defer r.Close()
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("inflate: got %v; want nil", err)
	}
	return out
}

// deflate compresses a message as permessage-deflate without context
// takeover sends it.
func deflate(t *testing.T, p []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := flate.NewWriter(&b, flate.BestSpeed)
	if err != nil {
		t.Fatalf("deflate: got %v; want nil", err)
	}
	w.Write(p)
	w.Flush()
	return bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
}

func TestPermessageDeflateEndToEnd(t *testing.T) {
	messages := [][]byte{
		[]byte("hi"),
		bytes.Repeat([]byte("compressible text, "), 4000),
		testPayload(3000, true),
		bytes.Repeat([]byte("compressible text, "), 4000), // again: context takeover
	}
	tests := []struct {
		name string
		run  func(t *testing.T) (resp *http.Response, rt func(t *testing.T, msg []byte) []byte)
	}{
		{"gorilla both ends", func(t *testing.T) (*http.Response, func(*testing.T, []byte) []byte) {
			up := startGorillaServer(t, gorilla.Upgrader{EnableCompression: true}, gorillaEcho, nil)
			addr, _ := startProxy(t, up)
			c, resp := dialGorilla(t, addr, nil, func(d *gorilla.Dialer) { d.EnableCompression = true })
			return resp, func(t *testing.T, msg []byte) []byte {
				_, back := gorillaClient{c}.roundTrip(t, true, msg)
				return back
			}
		}},
		{"coder both ends, context takeover", func(t *testing.T) (*http.Response, func(*testing.T, []byte) []byte) {
			up := startCoderServer(t, coder.AcceptOptions{CompressionMode: coder.CompressionContextTakeover}, coderEcho)
			addr, _ := startProxy(t, up)
			c, resp := dialCoder(t, addr, &coder.DialOptions{CompressionMode: coder.CompressionContextTakeover})
			return resp, func(t *testing.T, msg []byte) []byte {
				_, back := coderClient{c}.roundTrip(t, true, msg)
				return back
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, roundTrip := tt.run(t)
			if got := resp.Header.Get("Sec-WebSocket-Extensions"); !strings.HasPrefix(got, "permessage-deflate") {
				t.Fatalf("Sec-WebSocket-Extensions: got %q; want permessage-deflate", got)
			}
			for i, msg := range messages {
				if back := roundTrip(t, msg); !bytes.Equal(back, msg) {
					t.Errorf("message %d: %s", i, diffBytes(back, msg))
				}
			}
		})
	}

	t.Run("compressed frames relayed with RSV1", func(t *testing.T) {
		up := startRawUpstream(t, rawUpstreamOptions{
			extensions: "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
		})
		addr, _ := startProxy(t, up.URL)
		c, resp := dialGorilla(t, addr, nil, func(d *gorilla.Dialer) { d.EnableCompression = true })
		if got := resp.Header.Get("Sec-WebSocket-Extensions"); !strings.HasPrefix(got, "permessage-deflate") {
			t.Fatalf("Sec-WebSocket-Extensions: got %q; want permessage-deflate", got)
		}
		upstream := up.accept(t)
		if got := upstream.req.Header.Get("Sec-WebSocket-Extensions"); !strings.Contains(got, "permessage-deflate") {
			t.Errorf("extensions offered upstream: got %q; want permessage-deflate", got)
		}

		msg := []byte("hello hello hello hello hello")
		if err := c.WriteMessage(gorilla.TextMessage, msg); err != nil {
			t.Fatalf("write: got %v; want nil", err)
		}
		f := upstream.readFrame(t)
		if !f.Header.Rsv1() || f.Header.OpCode != ws.OpText || !f.Header.Fin {
			t.Errorf("frame at upstream: got rsv1=%v op=%v fin=%v; want rsv1=true op=%v fin=true",
				f.Header.Rsv1(), f.Header.OpCode, f.Header.Fin, ws.OpText)
		}
		if got := inflate(t, f.Payload); !bytes.Equal(got, msg) {
			t.Errorf("inflated at upstream: got %q; want %q", got, msg)
		}

		back := []byte("compressed answer answer answer")
		upstream.write(t, buildFrame(ws.Header{Fin: true, Rsv: ws.Rsv(true, false, false), OpCode: ws.OpText}, deflate(t, back)))
		c.SetReadDeadline(time.Now().Add(testTimeout))
		_, got, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("read: got %v; want nil", err)
		}
		if !bytes.Equal(got, back) {
			t.Errorf("client got %q; want %q", got, back)
		}
	})
}

func TestUpstreamRefusal(t *testing.T) {
	checkGoroutines(t)

	closedPort := func(t *testing.T) *url.URL {
		ln := listenLocal(t)
		ln.Close()
		return &url.URL{Scheme: "ws", Host: ln.Addr().String()}
	}
	// silent accepts TCP connections and never answers.
	silent := func(t *testing.T) *url.URL {
		ln := listenLocal(t)
		done := make(chan struct{})
		go func() {
			defer close(done)
			var conns []net.Conn
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				conns = append(conns, c)
			}
		}()
		t.Cleanup(func() {
			ln.Close()
			<-done
		})
		return &url.URL{Scheme: "ws", Host: ln.Addr().String()}
	}
	tests := []struct {
		name       string
		upstream   func(t *testing.T) *url.URL
		timeout    time.Duration
		wantStatus int
		wantBody   string // a substring of the client's body
		wantHeader http.Header
	}{
		{"upstream answers 403", func(t *testing.T) *url.URL {
			srv := serveHTTP(t, func(_ *handlers, w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Refusal", "no entry")
				w.Header().Set("Content-Type", "text/plain")
				w.WriteHeader(http.StatusForbidden)
				io.WriteString(w, "go away, you are not allowed\n")
			})
			return wsURLOf(t, srv)
		}, testTimeout, http.StatusForbidden, "go away, you are not allowed\n", http.Header{"X-Refusal": {"no entry"}}},
		{"upstream down", closedPort, testTimeout, http.StatusBadGateway, "", nil},
		{"upstream never answers", silent, 300 * time.Millisecond, http.StatusBadGateway, "", nil},
		{"upstream picks a subprotocol not offered", func(t *testing.T) *url.URL {
			return startRawUpstream(t, rawUpstreamOptions{protocol: "unoffered"}).URL
		}, testTimeout, http.StatusBadGateway, "", nil},
		{"upstream picks an extension not offered", func(t *testing.T) *url.URL {
			return startRawUpstream(t, rawUpstreamOptions{extensions: "x-unoffered"}).URL
		}, testTimeout, http.StatusBadGateway, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, _ := startProxy(t, tt.upstream(t), func(p *proxy.Proxy) { p.HandshakeTimeout = tt.timeout })
			d := gorilla.Dialer{HandshakeTimeout: testTimeout}
			c, resp, err := d.DialContext(testContext(t), addr+"/room", nil)
			if err == nil {
				c.Close()
				t.Fatalf("dial: got a connection; want status %d", tt.wantStatus)
			}
			if !errors.Is(err, gorilla.ErrBadHandshake) || resp == nil {
				t.Fatalf("dial: got %v; want %v with status %d", err, gorilla.ErrBadHandshake, tt.wantStatus)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status: got %d; want %d", resp.StatusCode, tt.wantStatus)
			}
			body, _ := io.ReadAll(resp.Body)
			if tt.wantBody != "" && string(body) != tt.wantBody {
				t.Errorf("body: got %q; want %q", body, tt.wantBody)
			}
			for k, vs := range tt.wantHeader {
				if got := resp.Header.Values(k); !slices.Equal(got, vs) {
					t.Errorf("%s: got %q; want %q", k, got, vs)
				}
			}
		})
	}
}

// dialTCP connects to the proxy behind a ws:// URL; the connection is
// closed when the test ends.
func dialTCP(t *testing.T, wsURL string) (net.Conn, *bufio.Reader) {
	t.Helper()
	d := net.Dialer{Timeout: testTimeout}
	conn, err := d.Dial("tcp", strings.TrimPrefix(wsURL, "ws://"))
	if err != nil {
		t.Fatalf("dial: got %v; want nil", err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(testTimeout))
	return conn, bufio.NewReader(conn)
}

func TestBadUpgradeRequestIsRefused(t *testing.T) {
	const key = "Sec-WebSocket-Key: " + testKey + "\r\n"
	tests := []struct {
		name       string
		request    string
		wantStatus int
		wantHeader http.Header
	}{
		{"version 8", "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + key +
			"Sec-WebSocket-Version: 8\r\n\r\n", http.StatusUpgradeRequired, http.Header{"Sec-Websocket-Version": {"13"}}},
		{"short key", "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n", http.StatusBadRequest, nil},
		{"no Connection: upgrade", "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n" + key +
			"Sec-WebSocket-Version: 13\r\n\r\n", http.StatusBadRequest, nil},
		{"POST", "POST / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" + key +
			"Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n", http.StatusMethodNotAllowed, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := startRawUpstream(t, rawUpstreamOptions{})
			addr, _ := startProxy(t, up.URL)
			conn, br := dialTCP(t, addr)
			if _, err := io.WriteString(conn, tt.request); err != nil {
				t.Fatalf("write: got %v; want nil", err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("read response: got %v; want nil", err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status: got %d; want %d", resp.StatusCode, tt.wantStatus)
			}
			for k, vs := range tt.wantHeader {
				if got := resp.Header.Values(k); !slices.Equal(got, vs) {
					t.Errorf("%s: got %q; want %q", k, got, vs)
				}
			}
			select {
			case c := <-up.conns:
				t.Errorf("upstream: got a session from %s; want none", c.RemoteAddr())
			default:
			}
		})
	}
}

func TestRequestHeadLimits(t *testing.T) {
	t.Run("head over 16 KiB gets 431", func(t *testing.T) {
		addr, _ := startProxy(t, startGorillaEcho(t))
		conn, br := dialTCP(t, addr)
		h := http.Header{"X-Padding": {strings.Repeat("p", 17<<10)}}
		if _, err := conn.Write(upgradeRequest(t, addr, h)); err != nil {
			t.Fatalf("write: got %v; want nil", err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("read response: got %v; want nil", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("status: got %d; want %d", resp.StatusCode, http.StatusRequestHeaderFieldsTooLarge)
		}
	})

	t.Run("unfinished head is dropped after HandshakeTimeout", func(t *testing.T) {
		addr, _ := startProxy(t, startGorillaEcho(t), func(p *proxy.Proxy) { p.HandshakeTimeout = 200 * time.Millisecond })
		conn, br := dialTCP(t, addr)
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"); err != nil {
			t.Fatalf("write: got %v; want nil", err)
		}
		_, err := io.Copy(io.Discard, br)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("connection: got still open after %v; want closed", testTimeout)
		}
	})
}

func TestTLSUpstreamAndNetDial(t *testing.T) {
	srv := serveHTTPS(t, gorillaHandler(gorilla.Upgrader{}, gorillaEcho, plainOrigin))
	var mu sync.Mutex
	var dialed []string
	addr, _ := startProxy(t, wsURLOf(t, srv), func(p *proxy.Proxy) {
		p.TLSClientConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
		p.NetDial = func(ctx context.Context, network, a string) (net.Conn, error) {
			mu.Lock()
			dialed = append(dialed, a)
			mu.Unlock()
			var d net.Dialer
			return d.DialContext(ctx, network, a)
		}
	})
	if got := wsURLOf(t, srv).Scheme; got != "wss" {
		t.Fatalf("upstream scheme: got %q; want wss", got)
	}
	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"websocket", func(t *testing.T) {
			c, _ := dialGorilla(t, addr, nil)
			echoOnce(t, c, "over TLS")
		}},
		{"plain HTTP", func(t *testing.T) {
			resp, err := noProxyClient(t).Get(httpURL(addr) + "/page?q=1")
			if err != nil {
				t.Fatalf("GET: got %v; want nil", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := "GET /page?q=1 forwarded-for=127.0.0.1"; string(body) != want {
				t.Errorf("body: got %q; want %q", body, want)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			before := len(dialed)
			mu.Unlock()
			tt.run(t)
			mu.Lock()
			defer mu.Unlock()
			if len(dialed) <= before {
				t.Errorf("NetDial calls: got %d; want more than %d", len(dialed), before)
			}
			for _, a := range dialed[before:] {
				if a != srv.Listener.Addr().String() {
					t.Errorf("NetDial address: got %q; want %q", a, srv.Listener.Addr().String())
				}
			}
		})
	}
}
