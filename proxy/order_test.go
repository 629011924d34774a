package proxy_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
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
