package echo

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// A close frame is echoed whole, code and reason; a code an endpoint must
// not send gets 1002.
func TestEchoClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := Start(ln)
	t.Cleanup(func() { s.Close() })
	for _, tc := range []struct {
		code       ws.StatusCode
		reason     string
		wantCode   ws.StatusCode
		wantReason string
	}{
		{4000, "bye", 4000, "bye"},
		{1000, "", 1000, ""},
		{1012, "service restart", 1012, "service restart"},
		{1014, "bad gateway", 1014, "bad gateway"},
		{1005, "", 1002, "invalid close frame"},
		{2000, "", 1002, "invalid close frame"},
	} {
		c, _, _, err := ws.Dial(context.Background(), "ws://"+ln.Addr().String()+"/")
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		f := ws.MaskFrameInPlace(ws.NewCloseFrame(ws.NewCloseFrameBody(tc.code, tc.reason)))
		if err := ws.WriteFrame(c, f); err != nil {
			t.Fatal(err)
		}
		got, err := ws.ReadFrame(c)
		c.Close()
		if err != nil || got.Header.OpCode != ws.OpClose {
			t.Errorf("close %d: got %+v, %v; want a close frame", tc.code, got.Header, err)
			continue
		}
		code, reason := ws.ParseCloseFrameData(got.Payload)
		if code != tc.wantCode || reason != tc.wantReason {
			t.Errorf("close %d %q: got %d %q back; want %d %q", tc.code, tc.reason, code, reason, tc.wantCode, tc.wantReason)
		}
	}
}
