package proxy_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"go.uber.org/zap"

	"github.com/wschaos/wschaos/proxy"
)

// BenchmarkRelay measures the cost of relaying one binary frame from a raw
// client through the proxy to a raw upstream, which either discards it or
// sends it back. Once the session is warm, allocs/op is the proxy's
// per-frame allocation.
func BenchmarkRelay(b *testing.B) {
	for _, mode := range []string{"discard", "echo"} {
		for _, size := range []int{128, 16 << 10} {
			b.Run(fmt.Sprintf("%s/%dB", mode, size), func(b *testing.B) {
				benchmarkRelay(b, size, mode == "echo")
			})
		}
	}
}

func benchmarkRelay(b *testing.B, size int, echo bool) {
	up := startRawUpstream(b, rawUpstreamOptions{})
	addr, _ := startProxy(b, up.URL, func(p *proxy.Proxy) { p.Logger = zap.NewNop() })
	client, _ := dialRaw(b, addr, nil, nil)
	upstream := up.accept(b)

	frame := buildFrame(ws.Header{Fin: true, OpCode: ws.OpBinary, Masked: true, Mask: testMask}, testPayload(size, true))
	echoLen := int64(ws.HeaderSize(ws.Header{Length: int64(size)}) + size)

	// Buffers are allocated once, so that the peers allocate nothing per
	// frame and allocs/op counts the proxy's allocations alone.
	upBuf := make([]byte, 64<<10)
	upHdr := make([]byte, ws.MaxHeaderSize)
	upOut := bufio.NewWriterSize(upstream, 64<<10)
	clientBuf := make([]byte, 64<<10)

	// upstreamSide takes n frames: it discards their bytes, or answers each
	// with the same payload, unmasked.
	upstreamSide := func(n int) error {
		if !echo {
			return readN(upstream.br, upBuf, int64(n)*int64(len(frame)))
		}
		for range n {
			h, err := ws.ReadHeaderBuffer(upstream.br, upHdr)
			if err != nil {
				return err
			}
			p := upBuf[:h.Length]
			if _, err := io.ReadFull(upstream.br, p); err != nil {
				return err
			}
			ws.Cipher(p, h.Mask, 0)
			h.Masked = false
			if err := ws.WriteHeaderBuffer(upOut, h, upHdr); err != nil {
				return err
			}
			upOut.Write(p)
			if upstream.br.Buffered() == 0 {
				if err := upOut.Flush(); err != nil {
					return err
				}
			}
		}
		return upOut.Flush()
	}

	run := func(n int) {
		deadline := time.Now().Add(2 * time.Minute)
		client.SetDeadline(deadline)
		upstream.SetDeadline(deadline)
		upDone := make(chan error, 1)
		go func() { upDone <- upstreamSide(n) }()
		echoed := make(chan error, 1)
		if echo {
			go func() { echoed <- readN(client.br, clientBuf, int64(n)*echoLen) }()
		} else {
			echoed <- nil
		}
		for range n {
			if _, err := client.Write(frame); err != nil {
				b.Fatalf("client write: got %v; want nil", err)
			}
		}
		if err := <-upDone; err != nil {
			b.Fatalf("upstream: got %v; want nil", err)
		}
		if err := <-echoed; err != nil {
			b.Fatalf("client read: got %v; want nil", err)
		}
	}

	run(1000) // warm the session's buffers and pools
	b.SetBytes(int64(size))
	b.ReportAllocs()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	run(b.N)
	b.StopTimer()
	runtime.ReadMemStats(&after)
	// allocs/op is rounded down; this shows an allocation every few frames.
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(b.N), "mallocs/frame")
}

// readN reads exactly n bytes from r through buf.
func readN(r io.Reader, buf []byte, n int64) error {
	for n > 0 {
		k, err := r.Read(buf[:min(int64(len(buf)), n)])
		n -= int64(k)
		if err != nil {
			if n > 0 && errors.Is(err, io.EOF) {
				return io.ErrUnexpectedEOF
			}
			if n > 0 {
				return err
			}
		}
	}
	return nil
}
