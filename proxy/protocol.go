package proxy

import (
	"errors"

	"github.com/gobwas/ws"
)

// Protocol violations the relay answers with close 1002 (or 1009 for
// errTooBig). The texts are the close frame's reason, so each is short.
var (
	errUnmaskedClient     = errors.New("unmasked client frame")
	errMaskedServer       = errors.New("masked server frame")
	errFragmentedControl  = errors.New("fragmented control frame")
	errControlTooLong     = errors.New("control frame longer than 125 bytes")
	errReservedOpcode     = errors.New("reserved opcode")
	errRSV                = errors.New("RSV bit without a negotiated extension")
	errRSV1Placement      = errors.New("RSV1 on a control or continuation frame")
	errOrphanContinuation = errors.New("continuation frame without a message start")
	errMessageInterleaved = errors.New("new message before the previous one ended")
	errTooBig             = errors.New("frame larger than max_frame_size")
)

// check validates a frame header from the copier's source against RFC 6455
// section 5 and the extensions the handshake negotiated, and tracks whether
// a fragmented message is open.
func (c *copier) check(h ws.Header) error { return c.s.checkFrame(c.src, h) }

// checkFrame is check for a frame header from src, which a loop relaying
// the session calls as the copier would.
func (s *session) checkFrame(src *peer, h ws.Header) error {
	switch {
	case h.OpCode.IsReserved():
		return errReservedOpcode
	case h.OpCode.IsControl() && !h.Fin:
		return errFragmentedControl
	case h.OpCode.IsControl() && h.Length > ws.MaxControlFramePayloadSize:
		return errControlTooLong
	case src.side == sideClient && !h.Masked: // section 5.1
		return errUnmaskedClient
	case src.side == sideUpstream && h.Masked:
		return errMaskedServer
	case h.Rsv&^s.rsv != 0: // section 5.2
		return errRSV
	case s.strict && h.Rsv != 0 && (h.OpCode.IsControl() || h.OpCode == ws.OpContinuation):
		return errRSV1Placement // RFC 7692 section 6.1
	case h.OpCode == ws.OpContinuation && !src.fragmented: // section 5.4
		return errOrphanContinuation
	case (h.OpCode == ws.OpText || h.OpCode == ws.OpBinary) && src.fragmented:
		return errMessageInterleaved
	case s.p.MaxFrameSize > 0 && h.Length > s.p.MaxFrameSize:
		return errTooBig
	}
	if !h.OpCode.IsControl() {
		src.fragmented = !h.Fin
	}
	return nil
}
