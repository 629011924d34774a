//go:build linux

package proxy_test

import (
	"sync/atomic"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"

	"github.com/wschaos/wschaos/proxy"
)

// TestLaneAcceptShortage: loops whose accepts fail for want of file
// descriptors take the listening socket out of their sets for a pause
// that doubles, instead of going round at once for as long as the
// shortage lasts (the socket stays readable while the client waits in
// the backlog); the client gets its session once accepts work again.
func TestLaneAcceptShortage(t *testing.T) {
	logger, logs := observedLogger(t)
	addr, p := startProxy(t, startGorillaEcho(t), func(p *proxy.Proxy) { p.Logger, p.Loops = logger, 2 })
	var short atomic.Bool
	short.Store(true)
	var tried *atomic.Int64
	waitUntil(t, "loops started", func() bool {
		var ok bool
		tried, ok = proxy.FailAccepts(p, short.Load)
		return ok
	})

	type dialed struct {
		c   *gorilla.Conn
		err error
	}
	done := make(chan dialed, 1)
	ctx := testContext(t)
	go func() { // goroutine "dialer": ends with its dial, within testTimeout
		d := gorilla.Dialer{HandshakeTimeout: testTimeout}
		c, _, err := d.DialContext(ctx, addr+"/short", nil)
		done <- dialed{c, err}
	}()

	// Two loops that back off from 5 ms try at most some seven accepts
	// each in the first 300 ms of a shortage, however slow the machine;
	// loops that went round at once would try thousands.
	waitLogs(t, logs, "accept failed; retrying", 2)
	time.Sleep(300 * time.Millisecond)
	const most = 40
	if n := tried.Load(); n > most {
		t.Errorf("accepts tried during the shortage: got %d; want at most %d", n, most)
	}
	for _, e := range logs.FilterMessage("accept failed; retrying").All() {
		in := e.ContextMap()["in"].(time.Duration)
		if in < 5*time.Millisecond || in > time.Second {
			t.Errorf("pause: got %v; want 5ms to 1s", in)
		}
	}

	short.Store(false)
	var got dialed
	select {
	case got = <-done:
	case <-time.After(testTimeout):
		t.Fatalf("dial: got no answer within %v of the shortage's end; want a session", testTimeout)
	}
	if got.err != nil {
		t.Fatalf("dial: got %v; want nil", got.err)
	}
	defer got.c.Close()
	echoOnce(t, got.c, "after the shortage")

	// The accept that took this client came after every failed one, each
	// counted and logged before the next accept.
	if n, logged := p.Stats().AcceptPauses, len(logs.FilterMessage("accept failed; retrying").All()); n != uint64(logged) {
		t.Errorf("Stats().AcceptPauses: got %d; want %d, one a pause logged", n, logged)
	}
}
