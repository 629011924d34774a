package proxy_test

import (
	"bytes"
	"io"
	"net"
	"net/url"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wschaos/wschaos/proxy"
	"github.com/wschaos/wschaos/rules"
)

// BenchmarkSession measures one whole session through the proxy, as the
// connect-rate workload of the bench harness opens them: the client's
// upgrade, the proxy's dial of the upstream, one echoed text message and
// the close handshake started by the client. The client and the upstream
// write precompiled bytes and read into fixed buffers, so that most of
// allocs/op and B/op is the proxy's.
func BenchmarkSession(b *testing.B) {
	b.Run("no rules", func(b *testing.B) { benchmarkSession(b, nil) })
	// Rules that apply to every session and never fire in it: a timer,
	// a count of messages and a clock.
	b.Run("idle rules", func(b *testing.B) {
		benchmarkSession(b, compileRules(b, false,
			rules.Spec{Name: "crash", After: "24h", Action: "reset"},
			rules.Spec{Name: "count", AfterMessages: ptr(int64(1_000_000_000)), Direction: "client", Action: "drop"},
			rules.Spec{Name: "restart", Every: "24h", Action: "close", Code: "going_away"},
		))
	})
}

func benchmarkSession(b *testing.B, set *rules.Set) {
	up := startEchoOnceUpstream(b)
	// Logs as the proxy writes them by default: JSON lines at info, two
	// per session, here to io.Discard.
	logger := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(io.Discard), zap.InfoLevel))
	addr, _ := startProxy(b, up, func(p *proxy.Proxy) { p.Logger, p.Rules = logger, set })
	host := addr[len("ws://"):]

	req := upgradeRequest(b, addr+"/bench", nil)
	msg := buildFrame(ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: testMask}, []byte("0123456789abcdef0123456789abcdef"))
	closeMsg := buildFrame(ws.Header{Fin: true, OpCode: ws.OpClose, Masked: true, Mask: testMask}, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	echoLen := len(msg) - 4       // the same frame, unmasked
	closeLen := len(closeMsg) - 4 // the upstream's answer, unmasked
	buf := make([]byte, 4<<10)

	session := func() {
		conn, err := net.DialTimeout("tcp", host, testTimeout)
		if err != nil {
			b.Fatalf("dial: got %v; want nil", err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(testTimeout))
		if _, err := conn.Write(req); err != nil {
			b.Fatalf("write upgrade: got %v; want nil", err)
		}
		n := 0
		for !bytes.Contains(buf[:n], []byte("\r\n\r\n")) {
			k, err := conn.Read(buf[n:])
			if err != nil {
				b.Fatalf("read 101: got %v after %q; want nil", err, buf[:n])
			}
			n += k
		}
		if !bytes.HasPrefix(buf, []byte("HTTP/1.1 101 ")) {
			b.Fatalf("upgrade answer: got %q; want 101", buf[:n])
		}
		if _, err := conn.Write(msg); err != nil {
			b.Fatalf("write message: got %v; want nil", err)
		}
		if _, err := io.ReadFull(conn, buf[:echoLen]); err != nil {
			b.Fatalf("read echo: got %v; want nil", err)
		}
		if _, err := conn.Write(closeMsg); err != nil {
			b.Fatalf("write close: got %v; want nil", err)
		}
		if _, err := io.ReadFull(conn, buf[:closeLen]); err != nil {
			b.Fatalf("read close: got %v; want nil", err)
		}
		if op := ws.OpCode(buf[0] & 0x0f); op != ws.OpClose {
			b.Fatalf("answer to close: got opcode %v; want %v", op, ws.OpClose)
		}
	}

	for range 100 {
		session() // warm pools and caches
	}
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for range b.N {
		session()
	}
	b.StopTimer()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N)/1024, "KiB/session")
}

// startEchoOnceUpstream serves upgrades with gobwas/ws: each session gets
// its first data frame back and its close frame answered. It returns the
// upstream's URL; it and its connections are closed when the test ends.
func startEchoOnceUpstream(t testing.TB) *url.URL {
	t.Helper()
	ln := listenLocal(t)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(testTimeout))
				if _, err := ws.Upgrade(conn); err != nil {
					return
				}
				var hdr [ws.MaxHeaderSize]byte
				var p [1024]byte
				for {
					h, err := ws.ReadHeaderBuffer(conn, hdr[:])
					if err != nil || h.Length > int64(len(p)) {
						return
					}
					if _, err := io.ReadFull(conn, p[:h.Length]); err != nil {
						return
					}
					ws.Cipher(p[:h.Length], h.Mask, 0)
					h.Masked = false
					if err := ws.WriteHeaderBuffer(conn, h, hdr[:]); err != nil {
						return
					}
					if _, err := conn.Write(p[:h.Length]); err != nil || h.OpCode == ws.OpClose {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return &url.URL{Scheme: "ws", Host: ln.Addr().String()}
}
