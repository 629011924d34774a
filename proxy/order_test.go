package proxy_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// TestFramesInOneWrite checks the relay of frames that reach the proxy in
// one write: several whole frames, a frame larger than the proxy's read
// buffer (4 KiB), a fragmented message with a ping and a pong inside it,
// and a close frame behind them all. Each must arrive as it was sent, in
// order, and the close handshake must still complete.
func TestFramesInOneWrite(t *testing.T) {
	type frame struct {
		fin     bool
		op      ws.OpCode
		payload []byte
	}
	frames := []frame{
		{true, ws.OpText, []byte("first")},
		{true, ws.OpPing, []byte("are you there")},
		{false, ws.OpText, []byte("frag")},
		{true, ws.OpPong, []byte("unsolicited")},
		{true, ws.OpContinuation, []byte("mented")},
		{true, ws.OpBinary, testPayload(10<<10, true)}, // larger than the read buffer
		{true, ws.OpText, []byte("last")},
		{true, ws.OpBinary, nil},
	}
	eachDirection(t, func(t *testing.T, src, dst *rawConn) {
		var out []byte
		for _, f := range frames {
			out = append(out, src.frame(f.fin, f.op, f.payload)...)
		}
		out = append(out, src.frame(true, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, "done"))...)
		src.write(t, out)
		for i, want := range frames {
			got := dst.readFrame(t)
			if got.Header.Fin != want.fin || got.Header.OpCode != want.op || !bytes.Equal(got.Payload, want.payload) {
				t.Fatalf("frame %d: got fin %v %v %s; want fin %v %v %s", i, got.Header.Fin, got.Header.OpCode,
					diffBytes(got.Payload, want.payload), want.fin, want.op, fmt.Sprintf("%d bytes", len(want.payload)))
			}
		}
		dst.expectClose(t, ws.StatusNormalClosure, "done")
		dst.writeClose(t, ws.StatusNormalClosure, "done")
		src.expectClose(t, ws.StatusNormalClosure, "done")
	})
}

// TestViolationBehindValidFramesInOneWrite checks that a frame breaking the
// protocol is caught when it arrives in the same read as valid frames: the
// valid ones are relayed, then the session is failed as usual (1002 to the
// violator, 1001 to the other side).
func TestViolationBehindValidFramesInOneWrite(t *testing.T) {
	client, upstream := rawPair(t)
	out := client.frame(true, ws.OpText, []byte("fine"))
	out = append(out, client.frame(true, ws.OpBinary, []byte("also fine"))...)
	out = append(out, buildFrame(ws.Header{Fin: true, OpCode: ws.OpText}, []byte("naked"))...) // unmasked
	client.write(t, out)
	for _, want := range []string{"fine", "also fine"} {
		if got := upstream.readFrame(t); string(got.Payload) != want {
			t.Fatalf("upstream got %v %q; want %q", got.Header.OpCode, got.Payload, want)
		}
	}
	upstream.expectClose(t, ws.StatusGoingAway, "client")
	client.expectClose(t, ws.StatusProtocolError, "unmasked")
}

// TestRelayUnderBackpressure checks that frames stay whole and in order when
// the receiving side stops reading until the socket buffers between it
// and the proxy are full, so that the proxy's writes are cut short and
// finished later.
func TestRelayUnderBackpressure(t *testing.T) {
	const (
		count = 4096
		size  = 2 << 10 // 8 MiB in all, more than loopback buffers hold
	)
	eachDirection(t, func(t *testing.T, src, dst *rawConn) {
		var batch []byte
		written := make(chan error, 1)
		go func() {
			src.SetWriteDeadline(time.Now().Add(transferTimeout(count * size)))
			payload := make([]byte, size)
			for i := range count {
				binary.BigEndian.PutUint32(payload, uint32(i))
				batch = append(batch, src.frame(true, ws.OpBinary, payload)...)
				if len(batch) >= 64<<10 || i == count-1 {
					if _, err := src.Write(batch); err != nil {
						written <- err
						return
					}
					batch = batch[:0]
				}
			}
			written <- nil
		}()
		// The reader starts once the writer is stuck or done.
		select {
		case err := <-written:
			t.Logf("writer done before the reader started: %v", err)
			written <- err
		case <-time.After(200 * time.Millisecond):
		}
		dst.SetReadDeadline(time.Now().Add(transferTimeout(count * size)))
		for i := range count {
			h, err := ws.ReadHeader(dst.br)
			if err != nil {
				t.Fatalf("frame %d: got %v; want a header", i, err)
			}
			p := make([]byte, h.Length)
			if _, err := io.ReadFull(dst.br, p); err != nil {
				t.Fatalf("frame %d: got %v; want %d bytes", i, err, h.Length)
			}
			if h.Masked {
				ws.Cipher(p, h.Mask, 0)
			}
			if h.OpCode != ws.OpBinary || len(p) != size || binary.BigEndian.Uint32(p) != uint32(i) {
				t.Fatalf("frame %d: got %v, %d bytes, number %d; want binary, %d bytes, number %d",
					i, h.OpCode, len(p), binary.BigEndian.Uint32(p), size, i)
			}
		}
		if err := <-written; err != nil {
			t.Fatalf("writer: got %v; want nil", err)
		}
	})
}

// TestRelayStreamInRandomPieces checks that a long stream of frames of
// every length class (RFC 6455 section 5.2: 7-bit, 16-bit and 64-bit
// lengths, around the proxy's 4 KiB read buffer), fragmented messages
// with control frames between their fragments, each client frame with a
// mask of its own, arrives byte for byte as it was sent when it reaches
// the proxy in pieces of any size cut anywhere, headers included.
func TestRelayStreamInRandomPieces(t *testing.T) {
	lengths := []int{0, 1, 2, 125, 126, 127, 200, 4094, 4095, 4096, 4097, 8192, 65535, 65536, 70000}
	pieces := []int{1, 2, 3, 5, 13, 14, 100, 1500, 4096, 9000, 70000}
	eachDirection(t, func(t *testing.T, src, dst *rawConn) {
		r := rand.New(rand.NewPCG(5, 6455))
		frame := func(fin bool, op ws.OpCode, p []byte) []byte {
			h := ws.Header{Fin: fin, OpCode: op, Masked: src.client}
			binary.BigEndian.PutUint32(h.Mask[:], r.Uint32())
			return buildFrame(h, p)
		}
		var stream []byte
		for range 300 {
			op := ws.OpText
			if r.IntN(2) == 0 {
				op = ws.OpBinary
			}
			parts := 1 + r.IntN(3)
			for i := range parts {
				if i > 0 {
					op = ws.OpContinuation
				}
				n := lengths[r.IntN(len(lengths))]
				if r.IntN(4) == 0 {
					n = r.IntN(3000)
				}
				stream = append(stream, frame(i == parts-1, op, testPayload(n, op == ws.OpBinary))...)
				if r.IntN(4) == 0 {
					ctl := []ws.OpCode{ws.OpPing, ws.OpPong}[r.IntN(2)]
					stream = append(stream, frame(true, ctl, testPayload(r.IntN(126), false))...)
				}
			}
		}
		written := make(chan error, 1)
		go func() { // goroutine "writer": ends when the stream is written or a write fails
			rest := stream
			src.SetWriteDeadline(time.Now().Add(transferTimeout(len(stream))))
			for i := 0; len(rest) > 0; i++ {
				n := min(pieces[r.IntN(len(pieces))], len(rest))
				if _, err := src.Write(rest[:n]); err != nil {
					written <- err
					return
				}
				rest = rest[n:]
				if i%16 == 15 {
					time.Sleep(time.Millisecond) // separate reads at the proxy
				}
			}
			written <- nil
		}()
		got := make([]byte, len(stream))
		dst.SetReadDeadline(time.Now().Add(transferTimeout(len(stream))))
		if _, err := io.ReadFull(dst.br, got); err != nil {
			t.Fatalf("read: got %v; want %d bytes", err, len(stream))
		}
		if err := <-written; err != nil {
			t.Fatalf("write: got %v; want nil", err)
		}
		if !bytes.Equal(got, stream) {
			t.Fatalf("stream: %s", diffBytes(got, stream))
		}
		src.writeClose(t, ws.StatusNormalClosure, "done")
		dst.expectClose(t, ws.StatusNormalClosure, "done")
		dst.writeClose(t, ws.StatusNormalClosure, "done")
		src.expectClose(t, ws.StatusNormalClosure, "done")
	})
}
