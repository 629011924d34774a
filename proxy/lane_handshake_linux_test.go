//go:build linux

package proxy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/wschaos/wschaos/proxy"
)

// bothPaths are the two ways a proxy serves a plain session's handshake:
// the loop's must do what the goroutines' does.
var bothPaths = []struct {
	name string
	opt  func(*proxy.Proxy)
}{
	{"goroutines", onGoroutines},
	{"loops", onLoops},
}

// answer101 writes a valid 101 for req, with extra header lines (each
// ending in CRLF) before the empty line.
func answer101(c net.Conn, req *http.Request, extra string) {
	c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		acceptKey(req.Header.Get("Sec-WebSocket-Key")) + "\r\n" + extra + "\r\n"))
}

// upgradeWaiting sends an upgrade request to the proxy at addr and returns
// once the upstream has it (reqs, from scriptedUpstream).
func upgradeWaiting(t *testing.T, addr string, reqs <-chan *http.Request) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, br := dialTCP(t, addr)
	conn.Write(upgradeRequest(t, addr, nil))
	select {
	case <-reqs:
	case <-time.After(testTimeout):
		t.Fatal("upstream: got no request; want one")
	}
	return conn, br
}

// An upgrade attempt that Shutdown cuts while its upstream has not
// answered yet is refused, with an event, on loops as on goroutines:
// every attempt, which takes a session ordinal, ends in one.
func TestLaneShutdownDuringUpstreamHandshake(t *testing.T) {
	for _, path := range bothPaths {
		t.Run(path.name, func(t *testing.T) {
			up, reqs := scriptedUpstream(t, func(_ net.Conn, _ *http.Request, done <-chan struct{}) { <-done })
			ev := newEventLog(t)
			addr, p := startProxy(t, up, path.opt, func(p *proxy.Proxy) {
				p.Events = ev
				p.HandshakeTimeout = 30 * time.Second
			})
			upgradeWaiting(t, addr, reqs)
			p.Close()
			e := ev.waitOne(t, proxy.EventRefused, 0)
			if e.Session != 1 || e.Refusal != proxy.RefusedUnreachable || e.Status != http.StatusBadGateway {
				t.Errorf("refused event: got session %d, %q, status %d; want session 1, %q, status %d",
					e.Session, e.Refusal, e.Status, proxy.RefusedUnreachable, http.StatusBadGateway)
			}
		})
	}
}

// An upstream's answer other than 101 is passed on with its status, which
// is the status gobwas/ws reads from its status line even where net/http
// would not read the answer, on loops as on goroutines.
func TestLaneUpstreamStatusPassedOn(t *testing.T) {
	tests := []struct {
		name   string
		answer string
		status int
	}{
		{"well formed", "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy", 503},
		{"header line without colon", "HTTP/1.1 503 Service Unavailable\r\nGarbage\r\nContent-Length: 0\r\n\r\n", 503},
		{"two-digit status", "HTTP/1.1 99 Odd\r\nContent-Length: 0\r\n\r\n", 99},
	}
	for _, tc := range tests {
		for _, path := range bothPaths {
			t.Run(tc.name+"/"+path.name, func(t *testing.T) {
				checkAnswerRefused(t, path.opt, tc.answer, false, tc.status, proxy.RefusedUpstream)
			})
		}
	}
}

// An upstream's answer is judged line by line as gobwas/ws reads it, on
// loops as on goroutines: a status other than 101 is passed on, and a 101
// header that is wrong refuses the session, without waiting for the rest
// of a head that does not come.
func TestLaneUpstreamAnswerJudgedBeforeItsEnd(t *testing.T) {
	tests := []struct {
		name    string
		answer  string
		status  int
		refusal string
	}{
		{"status line of a 503", "HTTP/1.1 503 Service Unavailable\r\n", 503, proxy.RefusedUpstream},
		{"101 with a wrong Upgrade", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: nope\r\n", 502, proxy.RefusedUnreachable},
		{"HTTP/1.0 status line", "HTTP/1.0 101 Switching Protocols\r\n", 502, proxy.RefusedUnreachable},
	}
	for _, tc := range tests {
		for _, path := range bothPaths {
			t.Run(tc.name+"/"+path.name, func(t *testing.T) {
				checkAnswerRefused(t, path.opt, tc.answer, true, tc.status, tc.refusal)
			})
		}
	}
}

// The rest of an upstream's non-101 answer is read within the dial's
// handshake timeout, on loops as on goroutines, not within a timeout of
// its own from the status line on: what comes later is not passed on.
// The status line comes 1.2 s after the dial, the rest 0.1 s or 1.4 s
// after it; the dial's timeout is 2 s (a timeout from the status line on
// would end at 3.2 s).
func TestLaneStatusAnswerWithinDialTimeout(t *testing.T) {
	tests := []struct {
		name       string
		rest       time.Duration // after the dial, when the rest of the answer comes
		wantHeader string
		wantBody   string
	}{
		{"rest in time", 1300 * time.Millisecond, "nope", "go away"},
		{"rest too late", 2600 * time.Millisecond, "", ""},
	}
	for _, tc := range tests {
		for _, path := range bothPaths {
			t.Run(tc.name+"/"+path.name, func(t *testing.T) {
				up, _ := scriptedUpstream(t, func(c net.Conn, _ *http.Request, done <-chan struct{}) {
					time.Sleep(1200 * time.Millisecond)
					c.Write([]byte("HTTP/1.1 403 Forbidden\r\n"))
					time.Sleep(tc.rest - 1200*time.Millisecond)
					c.Write([]byte("X-Why: nope\r\nContent-Length: 7\r\n\r\ngo away"))
					<-done
				})
				resp, body, _ := refusedAttempt(t, up, path.opt, 2*time.Second, 0)
				if resp.StatusCode != http.StatusForbidden {
					t.Errorf("status: got %d; want %d", resp.StatusCode, http.StatusForbidden)
				}
				if got := resp.Header.Get("X-Why"); got != tc.wantHeader {
					t.Errorf("X-Why: got %q; want %q", got, tc.wantHeader)
				}
				if string(body) != tc.wantBody {
					t.Errorf("body: got %q; want %q", body, tc.wantBody)
				}
			})
		}
	}
}

// refusedAttempt sends an upgrade request through a proxy to up, set up
// by opt with a handshake timeout (0: the default), all but the request's
// first byte late by late (0: all at once), and returns the client's
// answer, its body and the refused event.
func refusedAttempt(t *testing.T, up *url.URL, opt func(*proxy.Proxy), timeout, late time.Duration) (*http.Response, []byte, proxy.Event) {
	t.Helper()
	ev := newEventLog(t)
	addr, _ := startProxy(t, up, opt, func(p *proxy.Proxy) {
		p.Events = ev
		if timeout > 0 {
			p.HandshakeTimeout = timeout
		}
	})
	conn, br := dialTCP(t, addr)
	req := upgradeRequest(t, addr, nil)
	if late > 0 {
		conn.Write(req[:1])
		time.Sleep(late)
		req = req[1:]
	}
	conn.Write(req)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read answer: got %v; want a refusal", err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, body, ev.waitOne(t, proxy.EventRefused, 0)
}

// checkAnswerRefused has an upstream send answer (and then nothing more
// if stall) to an upgrade through a proxy set up by opt, and checks the
// status the client gets and the refused event's status and step.
func checkAnswerRefused(t *testing.T, opt func(*proxy.Proxy), answer string, stall bool, status int, refusal string) {
	t.Helper()
	up, _ := scriptedUpstream(t, func(c net.Conn, _ *http.Request, done <-chan struct{}) {
		c.Write([]byte(answer))
		if stall {
			<-done // the rest never comes
		}
	})
	var timeout time.Duration
	if stall {
		timeout = time.Second
	}
	resp, _, e := refusedAttempt(t, up, opt, timeout, 0)
	if resp.StatusCode != status || e.Status != status || e.Refusal != refusal {
		t.Errorf("got status %d for the client, %d and %q in the event; want %d, %d and %q",
			resp.StatusCode, e.Status, e.Refusal, status, status, refusal)
	}
}

// A 101 whose head is larger than a client's may be (16 KiB) opens the
// session with its headers passed on, on loops as on goroutines, however
// it arrives: gobwas/ws reads an answer's head whatever its size.
func TestLaneLargeUpstreamAnswer(t *testing.T) {
	big := strings.Repeat("b", 20<<10)
	for _, path := range bothPaths {
		t.Run(path.name, func(t *testing.T) {
			up, _ := scriptedUpstream(t, func(c net.Conn, req *http.Request, done <-chan struct{}) {
				head := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
					acceptKey(req.Header.Get("Sec-WebSocket-Key")) + "\r\nX-Big: " + big + "\r\n\r\n"
				cut := len(head) - 100 // past 16 KiB, before the head's end
				c.Write([]byte(head[:cut]))
				time.Sleep(200 * time.Millisecond)
				c.Write([]byte(head[cut:]))
				<-done
			})
			addr, _ := startProxy(t, up, path.opt)
			_, resp := dialRaw(t, addr, nil, nil)
			if got := resp.Header.Get("X-Big"); got != big {
				t.Errorf("X-Big of the client's 101: got %d bytes; want %d", len(got), len(big))
			}
		})
	}
}

// Shutdown closes a client whose upstream's non-101 answer is still being
// read, on loops as on goroutines, instead of leaving it to the handshake
// timeout after Shutdown has returned.
func TestLaneShutdownDuringStatusAnswer(t *testing.T) {
	for _, path := range bothPaths {
		t.Run(path.name, func(t *testing.T) {
			answered := make(chan struct{})
			up, _ := scriptedUpstream(t, func(c net.Conn, _ *http.Request, done <-chan struct{}) {
				c.Write([]byte("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 100\r\n\r\npartial"))
				close(answered)
				<-done // the rest of the body never comes
			})
			ev := newEventLog(t)
			addr, p := startProxy(t, up, path.opt, func(p *proxy.Proxy) {
				p.Events = ev
				p.HandshakeTimeout = 30 * time.Second
			})
			conn, _ := dialTCP(t, addr)
			conn.Write(upgradeRequest(t, addr, nil))
			<-answered
			time.Sleep(300 * time.Millisecond) // for the proxy to read the answer's start
			p.Close()
			conn.SetReadDeadline(time.Now().Add(testTimeout))
			if _, err := io.Copy(io.Discard, conn); isTimeout(err) {
				t.Errorf("client's connection after Close: got still open after %v; want closed", testTimeout)
			}
			if e := ev.waitOne(t, proxy.EventRefused, 0); e.Status != 503 || e.Refusal != proxy.RefusedUpstream {
				t.Errorf("refused event: got status %d, %q; want 503, %q", e.Status, e.Refusal, proxy.RefusedUpstream)
			}
		})
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Rules loaded while an upgrade attempt waits for its upstream apply to
// its session, on loops as on goroutines: the session is attached to them
// before its client has the 101, and a connect rule fires.
func TestLaneRulesLoadedDuringHandshake(t *testing.T) {
	for _, path := range bothPaths {
		t.Run(path.name, func(t *testing.T) {
			loaded := make(chan struct{})
			up, reqs := scriptedUpstream(t, func(c net.Conn, req *http.Request, done <-chan struct{}) {
				<-loaded
				answer101(c, req, "")
				<-done
			})
			addr, p, ev := startRules(t, up, nil, path.opt)
			conn, br := upgradeWaiting(t, addr, reqs)
			p.SetRules(compileRules(t, false, closeOnConnect("at-connect")))
			close(loaded)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("client's answer: got %v, %v; want 101", resp, err)
			}
			client := &rawConn{Conn: conn, br: br, client: true}
			client.expectClose(t, 4000, "")
			if faults := ev.of(proxy.EventFault, 0); len(faults) != 1 || faults[0].Session != 1 {
				t.Errorf("fault events: got %+v; want one, for session 1", faults)
			}
		})
	}
}

// A client that resets its connection while its upstream is dialed is
// refused with a log line saying so, on loops as on goroutines.
func TestLaneClientResetDuringHandshake(t *testing.T) {
	for _, path := range bothPaths {
		t.Run(path.name, func(t *testing.T) {
			reset := make(chan struct{})
			up, reqs := scriptedUpstream(t, func(c net.Conn, req *http.Request, done <-chan struct{}) {
				<-reset
				answer101(c, req, "")
				<-done
			})
			ev := newEventLog(t)
			log, logs := observedLogger(t)
			addr, _ := startProxy(t, up, path.opt, func(p *proxy.Proxy) {
				p.Events = ev
				p.Logger = log
			})
			conn, _ := upgradeWaiting(t, addr, reqs)
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
			time.Sleep(300 * time.Millisecond) // for the reset to arrive
			close(reset)
			if e := ev.waitOne(t, proxy.EventRefused, 0); e.Refusal != proxy.RefusedClient || e.Status != 0 {
				t.Errorf("refused event: got %q, status %d; want %q, status 0", e.Refusal, e.Status, proxy.RefusedClient)
			}
			entries := waitLogs(t, logs, "client handshake failed", 1)
			if got := entries[0].ContextMap()["session"]; got != uint64(1) {
				t.Errorf("session of the log line: got %v; want 1", got)
			}
		})
	}
}

// An upstream that fails the handshake gets its client the same refusal,
// and the same refused event, on loops as on goroutines: status, step,
// why and the answer's body, once the addresses (ports differ from run
// to run) are set aside.
func TestLaneRefusalReadsAlike(t *testing.T) {
	scripted := func(answer func(c net.Conn, done <-chan struct{})) func(t *testing.T) *url.URL {
		return func(t *testing.T) *url.URL {
			u, _ := scriptedUpstream(t, func(c net.Conn, _ *http.Request, done <-chan struct{}) { answer(c, done) })
			return u
		}
	}
	addrs := regexp.MustCompile(`127\.0\.0\.1:[0-9]+`)
	for _, tc := range []struct {
		name    string
		up      func(t *testing.T) *url.URL
		timeout time.Duration
		late    time.Duration // the client sends the rest of its request this late
		want    string        // in why
	}{
		{"closed without an answer", scripted(func(c net.Conn, _ <-chan struct{}) { c.Close() }), 0, 0, ": EOF"},
		{"closed within the status line", scripted(func(c net.Conn, _ <-chan struct{}) {
			c.Write([]byte("HTTP/1.1 101 Swi"))
			c.Close()
		}), 0, 0, ": EOF"},
		{"reset", scripted(func(c net.Conn, _ <-chan struct{}) {
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}), 0, 0, "read: connection reset by peer"},
		{"no answer in time", scripted(func(_ net.Conn, done <-chan struct{}) { <-done }), time.Second, 0, "i/o timeout"},
		// The upstream's handshake has a timeout of its own, from the dial
		// on, however long the client took to send its request.
		{"a late request, then an answer cut short in time", scripted(func(c net.Conn, _ <-chan struct{}) {
			time.Sleep(time.Second)
			c.Close()
		}), 2 * time.Second, 1500 * time.Millisecond, ": EOF"},
		{"wrong Sec-WebSocket-Accept", scripted(func(c net.Conn, done <-chan struct{}) {
			c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n"))
			<-done
		}), 0, 0, "Sec-WebSocket-Accept"},
		{"nothing listening", func(t *testing.T) *url.URL {
			ln := listenLocal(t)
			ln.Close()
			return &url.URL{Scheme: "ws", Host: ln.Addr().String(), Path: "/"}
		}, 0, 0, "connect: connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, path := range bothPaths {
				resp, body, e := refusedAttempt(t, tc.up(t), path.opt, tc.timeout, tc.late)
				if !strings.HasPrefix(e.Why, "dial ws://") || !strings.Contains(e.Why, tc.want) {
					t.Errorf("%s: why: got %q; want dial ws://... with %q", path.name, e.Why, tc.want)
				}
				got = append(got, addrs.ReplaceAllString(fmt.Sprintf("%d %d %s %q %q", resp.StatusCode, e.Status, e.Refusal, e.Why, body), "ADDR"))
			}
			if got[0] != got[1] {
				t.Errorf("refusal: got %s on %s; want %s, as on %s", got[1], bothPaths[1].name, got[0], bothPaths[0].name)
			}
		})
	}
}

// An upgrade request that cannot be read is refused with an event, as any
// other attempt: malformed (400) or with a head over 16 KiB (431), on
// loops as on goroutines. A head over 16 KiB that asks for no upgrade is
// no attempt, and makes no event.
func TestUnreadableUpgradeRefused(t *testing.T) {
	pad := strings.Repeat("p", 17<<10)
	for _, tc := range []struct {
		name   string
		head   string
		status int
		path   string // of the refused event; "" if there is none
	}{
		{"malformed header line", "GET /chat?room=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nno colon here\r\n\r\n", http.StatusBadRequest, "/chat"},
		{"malformed request line", "GET /chat HTTP/1.x\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", http.StatusBadRequest, "/chat"},
		{"head over 16 KiB", "GET /big HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Padding: " + pad + "\r\n\r\n", http.StatusRequestHeaderFieldsTooLarge, "/big"},
		{"head over 16 KiB, no upgrade", "GET /big HTTP/1.1\r\nHost: h\r\nX-Padding: " + pad + "\r\n\r\n", http.StatusRequestHeaderFieldsTooLarge, ""},
	} {
		for _, path := range bothPaths {
			t.Run(tc.name+"/"+path.name, func(t *testing.T) {
				ev := newEventLog(t)
				addr, _ := startProxy(t, startGorillaEcho(t), path.opt, func(p *proxy.Proxy) { p.Events = ev })
				conn, br := dialTCP(t, addr)
				io.WriteString(conn, tc.head)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("read answer: got %v; want %d", err, tc.status)
				}
				resp.Body.Close()
				if resp.StatusCode != tc.status {
					t.Errorf("status: got %d; want %d", resp.StatusCode, tc.status)
				}
				if tc.path == "" {
					// The connection is closed once its answer is written;
					// an event would have been recorded before.
					io.Copy(io.Discard, br)
					if evs := ev.snapshot(); len(evs) != 0 {
						t.Errorf("events: got %v; want none", evs)
					}
					return
				}
				e := ev.waitOne(t, proxy.EventRefused, 0)
				if e.Status != tc.status || e.Refusal != proxy.RefusedBadRequest || e.Path != tc.path || e.Client != conn.LocalAddr().String() {
					t.Errorf("refused event: got %d, %q, path %q, client %q; want %d, %q, path %q, client %q",
						e.Status, e.Refusal, e.Path, e.Client, tc.status, proxy.RefusedBadRequest, tc.path, conn.LocalAddr())
				}
			})
		}
	}
}

// A request the proxy reads as an upgrade but gobwas/ws's upgrader refuses
// (its Connection list has a quoted string before "Upgrade", where the
// upgrader's scan stops) is refused after the upstream has upgraded, with
// the upgrader's answer (which carries the upstream's headers) and an
// event, on loops as on goroutines; the session never opens.
func TestUpgraderRefusalReadsAlike(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  rawUpstreamOptions
		extra http.Header
	}{
		{"bad Connection", rawUpstreamOptions{}, http.Header{"Connection": {`"x", Upgrade`}}},
		{"bad Connection, a subprotocol chosen", rawUpstreamOptions{protocol: "chat"},
			http.Header{"Connection": {`"x", Upgrade`}, "Sec-Websocket-Protocol": {"chat"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, path := range bothPaths {
				up := startRawUpstream(t, tc.opts)
				ev := newEventLog(t)
				addr, p := startProxy(t, up.URL, path.opt, func(p *proxy.Proxy) { p.Events = ev })
				conn, br := dialTCP(t, addr)
				conn.Write(upgradeRequest(t, addr, tc.extra))
				answer, _ := io.ReadAll(br) // the proxy closes the connection
				if !bytes.HasPrefix(answer, []byte("HTTP/1.1 400 ")) {
					t.Errorf("%s: answer: got %q; want a 400", path.name, answer)
				}
				e := ev.waitOne(t, proxy.EventRefused, 0)
				if e.Refusal != proxy.RefusedClient || !strings.HasPrefix(e.Why, "answer client: ") {
					t.Errorf("%s: refusal: got %q, %q; want %q, answer client: ...", path.name, e.Refusal, e.Why, proxy.RefusedClient)
				}
				if n := len(p.Sessions()); n != 0 {
					t.Errorf("%s: sessions: got %d; want none", path.name, n)
				}
				got = append(got, fmt.Sprintf("%q %d %q %q", answer, e.Status, e.Refusal, e.Why))
			}
			if got[0] != got[1] {
				t.Errorf("refusal: got %s on loops; want %s, as on goroutines", got[1], got[0])
			}
		})
	}
}

// An upstream's answer other than 101 that a loop cannot hand to
// goroutines to pass on (the runtime's netpoller refused the sockets)
// still ends its attempt in a refused event: every attempt, which takes a
// session ordinal, ends in one. Its client gets no answer.
func TestLaneStatusAnswerHandOffFails(t *testing.T) {
	up, _ := scriptedUpstream(t, func(c net.Conn, _ *http.Request, done <-chan struct{}) {
		c.Write([]byte("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"))
		<-done
	})
	ev := newEventLog(t)
	addr, p := startProxy(t, up, onLoops, func(p *proxy.Proxy) { p.Events = ev })
	waitUntil(t, "loops started", func() bool { return proxy.FailHandOffs(p) })

	conn, br := dialTCP(t, addr)
	conn.Write(upgradeRequest(t, addr, nil))
	if b, err := br.ReadByte(); err == nil {
		t.Errorf("client: got byte %q; want the connection closed without an answer", b)
	}
	e := ev.waitOne(t, proxy.EventRefused, 1)
	if e.Refusal != proxy.RefusedUpstream || e.Status != 0 || !strings.Contains(e.Why, "upstream answered 503") {
		t.Errorf("refused event: got %q, status %d, why %q; want %q, status 0, why naming the 503",
			e.Refusal, e.Status, e.Why, proxy.RefusedUpstream)
	}
}

// A request head a loop hands to goroutines (it is not one the loop
// serves itself) that the runtime's netpoller will not take is closed
// without an answer; when it asked for an upgrade, that attempt ends in a
// refused event (refusal "proxy"), as every attempt does, and a plain
// HTTP request makes none.
func TestLaneHandOffFailsRefused(t *testing.T) {
	big := http.Header{"X-Pad": {strings.Repeat("p", 17<<10)}} // past the 16 KiB head limit
	badVersion := func(target string) []byte {                 // one checkUpgrade refuses
		return bytes.Replace(upgradeRequest(t, target, nil), []byte("Version: 13"), []byte("Version: 8"), 1)
	}
	tests := []struct {
		name     string
		head     func(addr string) []byte
		wantPath string // "": no event
	}{
		{"bad version", func(addr string) []byte { return badVersion(addr + "/v") }, "/v"},
		{"head too large", func(addr string) []byte { return upgradeRequest(t, addr+"/big", big) }, "/big"},
		{"plain request", func(addr string) []byte {
			return []byte("GET /plain HTTP/1.1\r\nHost: example\r\n\r\n")
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := newEventLog(t)
			addr, p := startProxy(t, startGorillaEcho(t), onLoops, func(p *proxy.Proxy) { p.Events = ev })
			waitUntil(t, "loops started", func() bool { return proxy.FailHandOffs(p) })

			conn, br := dialTCP(t, addr)
			conn.Write(tc.head(addr))
			if b, err := br.ReadByte(); err == nil {
				t.Errorf("client: got byte %q; want the connection closed without an answer", b)
			}
			if tc.wantPath == "" {
				// An upgrade attempt on another connection, refused the
				// same way, marks when the first has been dealt with.
				conn, br := dialTCP(t, addr)
				conn.Write(badVersion(addr + "/marker"))
				br.ReadByte()
				e := ev.waitOne(t, proxy.EventRefused, 0)
				if evs := ev.of(proxy.EventRefused, 0); len(evs) != 1 || e.Path != "/marker" {
					t.Errorf("refused events: got %v; want only the marker's", evs)
				}
				return
			}
			e := ev.waitOne(t, proxy.EventRefused, 0)
			if e.Refusal != proxy.RefusedProxy || e.Status != 0 || e.Path != tc.wantPath ||
				!strings.Contains(e.Why, "handing the connection to goroutines failed") || e.Client != conn.LocalAddr().String() {
				t.Errorf("refused event: got %q, status %d, path %q, why %q, client %q; want %q, status 0, path %q, why naming the hand-off, client %s",
					e.Refusal, e.Status, e.Path, e.Why, e.Client, proxy.RefusedProxy, tc.wantPath, conn.LocalAddr())
			}
		})
	}
}

// Handshakes under way together on a loop have their upgrade requests and
// 101s written together, after the batch of events that made them, from
// the loop's arena: each request reaches its own upstream whole, each
// client gets its own 101, and the sessions pair each client with the
// upstream its request named.
func TestLaneHandshakesOfOneBatch(t *testing.T) {
	const sessions = 48
	up := startRawUpstream(t, rawUpstreamOptions{waiting: sessions})
	addr, p := startProxy(t, up.URL, onLoops)
	// Headers of lengths that differ by session put each request at
	// another place in the arena.
	extra := func(i int) http.Header {
		return http.Header{
			"X-Session": {strconv.Itoa(i)},
			"X-Pad":     {strings.Repeat(string(rune('a'+i%26)), i*97%1500)},
		}
	}
	u, err := url.Parse(addr)
	if err != nil {
		t.Fatalf("parse %q: got %v; want nil", addr, err)
	}
	clients := make([]*rawConn, sessions)
	for i := range clients {
		conn, err := net.DialTimeout("tcp", u.Host, testTimeout)
		if err != nil {
			t.Fatalf("dial %s: got %v; want nil", u.Host, err)
		}
		t.Cleanup(func() { conn.Close() })
		clients[i] = &rawConn{Conn: conn, br: bufio.NewReader(conn), client: true}
	}
	// Every request goes before any is answered.
	for i, c := range clients {
		c.write(t, upgradeRequest(t, addr, extra(i)))
	}
	upstreams := make([]*rawConn, sessions)
	for range sessions {
		c := up.accept(t)
		i, err := strconv.Atoi(c.req.Header.Get("X-Session"))
		if err != nil || i < 0 || i >= sessions || upstreams[i] != nil {
			t.Fatalf("upstream request's X-Session: got %q; want one of 0-%d, once each", c.req.Header.Get("X-Session"), sessions-1)
		}
		if got, want := c.req.Header.Get("X-Pad"), extra(i).Get("X-Pad"); got != want {
			t.Fatalf("session %d: upstream request's X-Pad: got %d bytes; want %d", i, len(got), len(want))
		}
		upstreams[i] = c
	}
	for i, c := range clients {
		c.SetReadDeadline(time.Now().Add(testTimeout))
		resp, err := http.ReadResponse(c.br, nil)
		c.SetReadDeadline(time.Time{})
		if err != nil {
			t.Fatalf("session %d: read upgrade response: got %v; want nil", i, err)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("session %d: upgrade status: got %d; want 101", i, resp.StatusCode)
		}
		if got, want := resp.Header.Get("Sec-WebSocket-Accept"), acceptKey(testKey); got != want {
			t.Fatalf("session %d: Sec-WebSocket-Accept: got %q; want %q", i, got, want)
		}
	}
	if got := proxy.OnLoop(p); got != sessions {
		t.Fatalf("sessions on loops: got %d; want %d", got, sessions)
	}
	for i := range sessions {
		msg := fmt.Appendf(nil, "client %d", i)
		clients[i].writeFrame(t, true, ws.OpText, msg)
		if got := upstreams[i].readFrame(t); !bytes.Equal(got.Payload, msg) {
			t.Fatalf("session %d: upstream read: got %q; want %q", i, got.Payload, msg)
		}
		msg = fmt.Appendf(nil, "upstream %d", i)
		upstreams[i].writeFrame(t, true, ws.OpText, msg)
		if got := clients[i].readFrame(t); !bytes.Equal(got.Payload, msg) {
			t.Fatalf("session %d: client read: got %q; want %q", i, got.Payload, msg)
		}
	}
}
