package proxy_test

import (
	"bytes"
	"testing"

	"github.com/gobwas/ws"

	"github.com/wschaos/wschaos/proxy"
)

func TestProtocolViolations(t *testing.T) {
	type frame struct {
		h       ws.Header // Masked is filled in as the sender's side requires, unless flipMask
		payload []byte
	}
	tests := []struct {
		name         string
		sides        []string // who commits the violation
		maxFrameSize int64
		prelude      []frame // valid frames sent first; the other side gets them
		bad          frame
		flipMask     bool // send the bad frame with the wrong masking for its side
		wantCode     ws.StatusCode
		wantWord     string // the reason must contain it
	}{
		{
			name:     "unmasked client frame",
			sides:    []string{"client"},
			bad:      frame{ws.Header{Fin: true, OpCode: ws.OpText}, []byte("naked")},
			flipMask: true,
			wantCode: ws.StatusProtocolError, wantWord: "unmasked",
		},
		{
			name:     "masked server frame",
			sides:    []string{"upstream"},
			bad:      frame{ws.Header{Fin: true, OpCode: ws.OpText}, []byte("disguised")},
			flipMask: true,
			wantCode: ws.StatusProtocolError, wantWord: "masked",
		},
		{
			name:     "fragmented control frame",
			sides:    []string{"client", "upstream"},
			bad:      frame{ws.Header{Fin: false, OpCode: ws.OpPing}, []byte("half a ping")},
			wantCode: ws.StatusProtocolError, wantWord: "fragmented",
		},
		{
			name:     "control frame over 125 bytes",
			sides:    []string{"client", "upstream"},
			bad:      frame{ws.Header{Fin: true, OpCode: ws.OpPing}, bytes.Repeat([]byte("p"), 126)},
			wantCode: ws.StatusProtocolError, wantWord: "125",
		},
		{
			name:     "reserved data opcode 3",
			sides:    []string{"client", "upstream"},
			bad:      frame{ws.Header{Fin: true, OpCode: 0x3}, []byte("?")},
			wantCode: ws.StatusProtocolError, wantWord: "reserved opcode",
		},
		{
			name:     "reserved control opcode 0xB",
			sides:    []string{"client", "upstream"},
			bad:      frame{ws.Header{Fin: true, OpCode: 0xB}, []byte("?")},
			wantCode: ws.StatusProtocolError, wantWord: "reserved opcode",
		},
		{
			name:     "RSV1 without extension",
			sides:    []string{"client", "upstream"},
			bad:      frame{ws.Header{Fin: true, Rsv: ws.Rsv(true, false, false), OpCode: ws.OpText}, []byte("squeezed?")},
			wantCode: ws.StatusProtocolError, wantWord: "RSV",
		},
		{
			name:     "continuation without start",
			sides:    []string{"client", "upstream"},
			bad:      frame{ws.Header{Fin: true, OpCode: ws.OpContinuation}, []byte("orphan")},
			wantCode: ws.StatusProtocolError, wantWord: "continuation",
		},
		{
			name:     "new message inside a fragmented one",
			sides:    []string{"client", "upstream"},
			prelude:  []frame{{ws.Header{Fin: false, OpCode: ws.OpText}, []byte("first half")}},
			bad:      frame{ws.Header{Fin: true, OpCode: ws.OpText}, []byte("intruder")},
			wantCode: ws.StatusProtocolError, wantWord: "new message",
		},
		{
			name:         "frame over MaxFrameSize",
			sides:        []string{"client", "upstream"},
			maxFrameSize: 1024,
			prelude:      []frame{{ws.Header{Fin: true, OpCode: ws.OpBinary}, bytes.Repeat([]byte("k"), 1024)}},
			bad:          frame{ws.Header{Fin: true, OpCode: ws.OpBinary}, bytes.Repeat([]byte("b"), 1025)},
			wantCode:     ws.StatusMessageTooBig, wantWord: "larger",
		},
	}
	for _, tt := range tests {
		for _, side := range tt.sides {
			t.Run(tt.name+"/by "+side, func(t *testing.T) {
				client, upstream := rawPair(t, func(p *proxy.Proxy) { p.MaxFrameSize = tt.maxFrameSize })
				violator, other := client, upstream
				if side == "upstream" {
					violator, other = upstream, client
				}
				for _, f := range tt.prelude {
					violator.writeFrame(t, f.h.Fin, f.h.OpCode, f.payload)
					got := other.readFrame(t)
					if got.Header.OpCode != f.h.OpCode || !bytes.Equal(got.Payload, f.payload) {
						t.Fatalf("prelude: got %v %q; want %v %q", got.Header.OpCode, got.Payload, f.h.OpCode, f.payload)
					}
				}
				h := tt.bad.h
				h.Masked = violator.client != tt.flipMask
				h.Mask = testMask
				violator.write(t, buildFrame(h, tt.bad.payload))

				violator.expectClose(t, tt.wantCode, tt.wantWord)
				// The other side gets 1001 and nothing of the bad frame.
				other.expectClose(t, ws.StatusGoingAway, "")

				// Once both answer, both connections end.
				violator.writeClose(t, tt.wantCode, "")
				other.writeClose(t, ws.StatusGoingAway, "")
				violator.expectEnd(t)
				other.expectEnd(t)
			})
		}
	}
}
