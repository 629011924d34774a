package proxy

import (
	"bytes"
	"io"

	"github.com/gobwas/ws"

	"github.com/wschaos/wschaos/rules"
)

// defaultMaxInspect is how much of a message is held for on_message rules
// when Proxy.MaxInspectSize is zero.
const defaultMaxInspect = 1 << 20

// inspector holds the frames of a message from its copier's source until
// the message is whole, so that on_message rules can look at it before it
// is delivered. Control frames between its fragments are relayed at once.
type inspector struct {
	holding bool
	raw     bytes.Buffer // the frames as they came, masks included
	text    []byte       // the unmasked payload
}

// wantsInspect reports whether the data frame h starts a message that an
// on_message rule must see first. A compressed message (RSV1) is not
// inspected: it cannot be inflated in the middle of a stream.
func (c *copier) wantsInspect(h ws.Header) bool {
	return (h.OpCode == ws.OpText || h.OpCode == ws.OpBinary) && h.Rsv&rsv1 == 0 &&
		c.s.inspecting.Load()&uint32(sideDir(c.src.side)) != 0
}

// hold reads a frame of a held message. A message that grows past the
// inspection limit is released as it is and the rest of it is relayed
// uninspected.
func (c *copier) hold(h ws.Header) error {
	in := &c.in
	in.holding = true
	if int64(len(in.text))+h.Length > c.s.p.maxInspect() {
		in.holding = false
		var claimed []*sessionRule
		if held := int64(len(in.text)); held > 0 {
			claimed = c.s.claimCounted(c.src.side, ws.Header{OpCode: ws.OpContinuation, Length: held})
		}
		claimed = append(claimed, c.s.claimCounted(c.src.side, h)...)
		err := c.release()
		if err == nil {
			err = c.relayFrame(h)
		}
		c.s.fireCounted(claimed)
		return err
	}
	ws.WriteHeaderBuffer(&in.raw, h, c.hdr[:])
	start := len(in.text)
	in.text = append(in.text, make([]byte, h.Length)...)
	p := in.text[start:]
	if _, err := io.ReadFull(c.src.br, p); err != nil {
		return err
	}
	in.raw.Write(p)
	if h.Masked {
		ws.Cipher(p, h.Mask, 0)
	}
	if !h.Fin {
		return nil
	}
	in.holding = false
	for _, sr := range *c.s.rules.Load() {
		lr := sr.lr
		if lr.Trigger != rules.OnMessage || !sr.hit || lr.Direction&sideDir(c.src.side) == 0 {
			continue
		}
		if lr.Pattern.Match(in.text) && c.s.fire(sr, nil) {
			c.discard()
			return nil // the matching message is not delivered
		}
	}
	claimed := c.s.claimCounted(c.src.side, ws.Header{Fin: true, OpCode: h.OpCode, Length: int64(len(in.text))})
	err := c.release()
	c.s.fireCounted(claimed)
	return err
}

// release writes the held frames to dst as they came.
func (c *copier) release() error {
	in := &c.in
	if in.raw.Len() == 0 {
		return nil
	}
	dst := c.dst
	dst.wmu.Lock()
	if dst.gotClose.Load() {
		// A close frame went to dst while the message was held: nothing
		// follows it.
		dst.unlock()
		c.discard()
		return nil
	}
	bw := dst.writer()
	_, err := bw.Write(in.raw.Bytes())
	if ferr := dst.flush(); err == nil {
		err = ferr
	}
	dst.unlock()
	c.discard()
	if err != nil {
		return &writeError{err}
	}
	return nil
}

func (c *copier) discard() {
	c.in.raw.Reset()
	c.in.text = c.in.text[:0]
	if cap(c.in.text) > 64<<10 {
		c.in.text = nil // do not keep a large buffer for an idle session
		c.in.raw = bytes.Buffer{}
	}
}

func (p *Proxy) maxInspect() int64 {
	if p.MaxInspectSize > 0 {
		return p.MaxInspectSize
	}
	return defaultMaxInspect
}
