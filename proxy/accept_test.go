package proxy_test

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wschaos/wschaos/proxy"
)

// accept4Error is an accept error as net.TCPListener returns it.
func accept4Error(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

func TestRetryAccept(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"out of descriptors", accept4Error(syscall.EMFILE), true},
		{"system out of descriptors", accept4Error(syscall.ENFILE), true},
		{"out of buffers", accept4Error(syscall.ENOBUFS), true},
		{"out of memory", accept4Error(syscall.ENOMEM), true},
		{"connection aborted", accept4Error(syscall.ECONNABORTED), true},
		{"timeout", &net.OpError{Op: "accept", Net: "tcp", Err: timeoutError{}}, true},
		{"closed listener", &net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}, false},
		{"bad descriptor", accept4Error(syscall.EBADF), false},
		{"invalid", accept4Error(syscall.EINVAL), false},
		{"other", errors.New("listener broke"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := proxy.RetryAccept(tt.err); got != tt.want {
				t.Errorf("RetryAccept(%v): got %v; want %v", tt.err, got, tt.want)
			}
		})
	}
}

// shortListener fails its first accepts as a process out of file
// descriptors does, then accepts.
type shortListener struct {
	net.Listener
	left atomic.Int64
}

func (l *shortListener) Accept() (net.Conn, error) {
	if l.left.Add(-1) >= 0 {
		return nil, accept4Error(syscall.EMFILE)
	}
	return l.Listener.Accept()
}

// TestAcceptShortage: a proxy whose accepts fail for want of file
// descriptors, as in a reconnect storm past the process's limit, waits
// and tries again, backing off, instead of ending Serve; the client
// waiting in the backlog meanwhile gets its session.
func TestAcceptShortage(t *testing.T) {
	logger, logs := observedLogger(t)
	ln := &shortListener{Listener: listenLocal(t)}
	ln.left.Store(3)
	// startProxyOn checks, when the test ends, that Serve returned only
	// then, with ErrServerClosed.
	addr, p := startProxyOn(t, ln, startGorillaEcho(t), func(p *proxy.Proxy) { p.Logger = logger })

	c, _ := dialGorilla(t, addr+"/short", nil)
	defer c.Close()
	echoOnce(t, c, "after the shortage")

	entries := logs.FilterMessage("accept failed; retrying").All()
	var got []time.Duration
	for _, e := range entries {
		got = append(got, e.ContextMap()["in"].(time.Duration))
	}
	want := []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond}
	if len(got) != len(want) {
		t.Fatalf("pauses logged: got %v; want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("pause %d: got %v; want %v", i, got[i], want[i])
		}
	}
	if n := p.Stats().AcceptPauses; n != uint64(len(want)) {
		t.Errorf("Stats().AcceptPauses: got %d; want %d", n, len(want))
	}
}
