package proxy_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/wschaos/wschaos/proxy"
)

// rawHandshake sends head, a request head with %s where the proxy's
// host:port goes, to the proxy at addr and returns its answer.
func rawHandshake(t *testing.T, addr, head string) *http.Response {
	t.Helper()
	u, _ := url.Parse(addr)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, head, u.Host)
	conn.SetReadDeadline(time.Now().Add(testTimeout))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// A request that splits Connection over two field lines (RFC 9110
// section 5.3) is a valid upgrade, answered 101.
func TestUpgradeConnectionOnTwoLines(t *testing.T) {
	up, _ := recordRequests(t, gorilla.Upgrader{})
	addr, _ := startProxy(t, up)
	resp := rawHandshake(t, addr, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: keep-alive\r\nConnection: Upgrade\r\n"+
		"Upgrade: websocket\r\nSec-WebSocket-Key: "+testKey+"\r\nSec-WebSocket-Version: 13\r\n\r\n")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("status: got %d %q (headers %v); want 101", resp.StatusCode, body, resp.Header)
	}
}

// Plain HTTP requests over the proxy's own TLS listener must reach the
// origin with X-Forwarded-Proto: https.
func TestPlainHTTPOverTLSForwardedProto(t *testing.T) {
	got := make(chan string, 1)
	up := startGorillaServer(t, gorilla.Upgrader{}, gorillaEcho, func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("X-Forwarded-Proto")
	})
	cert, pool := selfSigned(t)
	addr, _ := startProxy(t, up, func(p *proxy.Proxy) {
		p.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	})
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: testTimeout}
	resp, err := c.Get("https://" + strings.TrimPrefix(addr, "ws://") + "/page")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if p := <-got; p != "https" {
		t.Fatalf("X-Forwarded-Proto at the origin: got %q; want %q", p, "https")
	}
}

// An upstream's non-101 answer is passed on with its end-to-end headers
// only: a header its Connection names is hop-by-hop (RFC 9110 7.6.1).
func TestRefusalDropsHeadersConnectionNames(t *testing.T) {
	up, _ := scriptedUpstream(t, func(c net.Conn, _ *http.Request, _ <-chan struct{}) {
		io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nConnection: close, X-Internal\r\nX-Internal: secret\r\nContent-Length: 3\r\n\r\nno\n")
	})
	addr, _ := startProxy(t, up)
	u, _ := url.Parse(addr)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.Write(upgradeRequest(t, addr, nil))
	conn.SetReadDeadline(time.Now().Add(testTimeout))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 403 {
		t.Fatalf("status: got %d; want 403", resp.StatusCode)
	}
	if v := resp.Header.Get("X-Internal"); v != "" {
		t.Fatalf("X-Internal: got %q; want it dropped (named by the upstream's Connection)", v)
	}
}

// The refused event records the status the client actually got: 400 for
// a request without Sec-WebSocket-Version, 426 only for a wrong one.
func TestUpgradeWithoutVersionStatus(t *testing.T) {
	ev := newEventLog(t)
	addr, _ := startProxy(t, startGorillaEcho(t), func(p *proxy.Proxy) { p.Events = ev })
	resp := rawHandshake(t, addr, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
		"Sec-WebSocket-Key: "+testKey+"\r\n\r\n")
	e := ev.waitOne(t, proxy.EventRefused, 0)
	if resp.StatusCode != http.StatusBadRequest || e.Status != resp.StatusCode {
		t.Fatalf("got %d for the client and %d in the refused event; want 400 for both", resp.StatusCode, e.Status)
	}
}

// RFC 6455 4.2.1: the key must be base64 of 16 bytes; a malformed request
// is refused before anything is dialed (README).
func TestUpgradeKeyNotBase64IsRefused(t *testing.T) {
	up := startRawUpstream(t, rawUpstreamOptions{})
	addr, _ := startProxy(t, up.URL)
	conn, br := dialTCP(t, addr)
	host := strings.TrimPrefix(addr, "ws://")
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", host, strings.Repeat("!", 24))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("status: got %d; want 400", resp.StatusCode)
	}
	select {
	case c := <-up.conns:
		t.Errorf("upstream: got a session from %s; want none", c.RemoteAddr())
	case <-time.After(200 * time.Millisecond):
	}
}

// The 16 KiB head limit holds for an upgrade on a kept-alive connection too.
func TestHeadLimitOnKeptAliveConnection(t *testing.T) {
	up := startGorillaServer(t, gorilla.Upgrader{}, gorillaEcho, plainOrigin)
	addr, _ := startProxy(t, up)
	conn, br := dialTCP(t, addr)
	host := strings.TrimPrefix(addr, "ws://")
	io.WriteString(conn, "GET /first HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	h := http.Header{"X-Padding": {strings.Repeat("p", 64<<10)}}
	conn.Write(upgradeRequest(t, addr+"/second", h))
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status for a 64 KiB head: got %d; want 431", resp.StatusCode)
	}
}

// A malformed Sec-WebSocket-Extensions is the client's fault: the upstream
// is never dialed, so the refusal is not the upstream's.
func TestMalformedExtensionsRefusedAsBadRequest(t *testing.T) {
	ev := newEventLog(t)
	up := startRawUpstream(t, rawUpstreamOptions{})
	addr, _ := startProxy(t, up.URL, func(p *proxy.Proxy) { p.Events = ev })
	conn, br := dialTCP(t, addr)
	conn.Write(upgradeRequest(t, addr, http.Header{"Sec-Websocket-Extensions": {"permessage-deflate; ;;=,"}}))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := ev.waitOne(t, proxy.EventRefused, 0)
	if resp.StatusCode != 400 || e.Refusal != proxy.RefusedBadRequest {
		t.Fatalf("got status %d, refusal %q; want 400, %q", resp.StatusCode, e.Refusal, proxy.RefusedBadRequest)
	}
}
