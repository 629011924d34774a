package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coder "github.com/coder/websocket"
	"github.com/gobwas/ws"
	gorilla "github.com/gorilla/websocket"

	"github.com/wschaos/wschaos/proxy"
)

// echoClient sends one message through a WebSocket client library and
// returns the message that comes back.
type echoClient interface {
	roundTrip(t *testing.T, binary bool, msg []byte) (binaryBack bool, back []byte)
}

// transferTimeout bounds sending and receiving a message of n bytes: large
// messages get longer, since the race detector makes copying slow.
func transferTimeout(n int) time.Duration {
	return testTimeout + time.Duration(n>>20)*time.Second
}

type gorillaClient struct{ c *gorilla.Conn }

func (g gorillaClient) roundTrip(t *testing.T, binary bool, msg []byte) (bool, []byte) {
	t.Helper()
	typ := gorilla.TextMessage
	if binary {
		typ = gorilla.BinaryMessage
	}
	// The upstream may echo while the message is still arriving, so the
	// client reads while it writes.
	written := make(chan error, 1)
	deadline := time.Now().Add(transferTimeout(len(msg)))
	go func() {
		g.c.SetWriteDeadline(deadline)
		written <- g.c.WriteMessage(typ, msg)
	}()
	g.c.SetReadDeadline(deadline)
	gotTyp, back, err := g.c.ReadMessage()
	if werr := <-written; werr != nil {
		t.Fatalf("write: got %v; want nil", werr)
	}
	if err != nil {
		t.Fatalf("read: got %v; want nil", err)
	}
	return gotTyp == gorilla.BinaryMessage, back
}

type coderClient struct{ c *coder.Conn }

func (c coderClient) roundTrip(t *testing.T, binary bool, msg []byte) (bool, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), transferTimeout(len(msg)))
	defer cancel()
	typ := coder.MessageText
	if binary {
		typ = coder.MessageBinary
	}
	written := make(chan error, 1)
	go func() { written <- c.c.Write(ctx, typ, msg) }()
	gotTyp, back, err := c.c.Read(ctx)
	if werr := <-written; werr != nil {
		t.Fatalf("write: got %v; want nil", werr)
	}
	if err != nil {
		t.Fatalf("read: got %v; want nil", err)
	}
	return gotTyp == coder.MessageBinary, back
}

// testPayload returns n bytes: printable ASCII for a text message, seeded
// pseudo-random bytes for a binary one.
func testPayload(n int, binary bool) []byte {
	p := make([]byte, n)
	if binary {
		r := rand.NewChaCha8([32]byte{1, 2, 3})
		r.Read(p)
		return p
	}
	const alphabet = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789.,;"
	for i := range p {
		p[i] = alphabet[(i*7+i/len(alphabet))%len(alphabet)]
	}
	return p
}

// diffBytes describes how got differs from want without printing them.
func diffBytes(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	return fmt.Sprintf("got %d bytes, first difference at %d; want %d bytes", len(got), i, len(want))
}

func TestEchoMessageSizes(t *testing.T) {
	sizes := []int{0, 125, 126, 65535, 65536, 16 << 20}
	upstreams := []struct {
		name  string
		start func(testing.TB) *url.URL
	}{
		{"gorilla upstream", startGorillaEcho},
		{"coder upstream", startCoderEcho},
	}
	clients := []struct {
		name string
		dial func(t *testing.T, addr string) echoClient
	}{
		{"gorilla client", func(t *testing.T, addr string) echoClient {
			c, _ := dialGorilla(t, addr+"/echo", nil)
			return gorillaClient{c}
		}},
		{"coder client", func(t *testing.T, addr string) echoClient {
			c, _ := dialCoder(t, addr+"/echo", nil)
			return coderClient{c}
		}},
	}
	for _, up := range upstreams {
		for _, cl := range clients {
			t.Run(cl.name+"/"+up.name, func(t *testing.T) {
				addr, _ := startProxy(t, up.start(t))
				client := cl.dial(t, addr)
				for _, binary := range []bool{false, true} {
					for _, size := range sizes {
						kind := "text"
						if binary {
							kind = "binary"
						}
						// The subtests share a connection: after a failure the
						// rest would only repeat it.
						if t.Failed() {
							return
						}
						t.Run(kind+"/"+strconv.Itoa(size), func(t *testing.T) {
							msg := testPayload(size, binary)
							gotBinary, back := client.roundTrip(t, binary, msg)
							if gotBinary != binary {
								t.Errorf("binary: got %v; want %v", gotBinary, binary)
							}
							if !bytes.Equal(back, msg) {
								t.Errorf("echo: %s", diffBytes(back, msg))
							}
						})
					}
				}
			})
		}
	}
}

// sameHeader reports whether two frame headers are identical, mask and all.
func sameHeader(got, want ws.Header) bool {
	return got.Fin == want.Fin && got.Rsv == want.Rsv && got.OpCode == want.OpCode &&
		got.Masked == want.Masked && got.Mask == want.Mask && got.Length == want.Length
}

func TestFragmentedMessageWithPingIsRelayedFrameByFrame(t *testing.T) {
	type frame struct {
		fin     bool
		op      ws.OpCode
		payload string
	}
	frames := []frame{
		{false, ws.OpText, "Hello, "},
		{true, ws.OpPing, "still there?"},
		{true, ws.OpContinuation, "world"},
	}

	t.Run("raw upstream", func(t *testing.T) {
		client, upstream := rawPair(t)
		for _, f := range frames {
			client.writeFrame(t, f.fin, f.op, []byte(f.payload))
		}
		for i, f := range frames {
			got := upstream.readFrame(t)
			want := ws.Header{Fin: f.fin, OpCode: f.op, Masked: true, Mask: testMask, Length: int64(len(f.payload))}
			if !sameHeader(got.Header, want) {
				t.Errorf("frame %d header: got %+v; want %+v", i, got.Header, want)
			}
			if string(got.Payload) != f.payload {
				t.Errorf("frame %d payload: got %q; want %q", i, got.Payload, f.payload)
			}
		}
		if f, err := upstream.tryReadFrame(100 * time.Millisecond); err == nil {
			t.Errorf("extra frame: got %+v; want none", f.Header)
		}
	})

	t.Run("gorilla upstream", func(t *testing.T) {
		events := make(chan string, 4)
		up := startGorillaServer(t, gorilla.Upgrader{}, func(c *gorilla.Conn, _ *http.Request) {
			c.SetPingHandler(func(p string) error {
				events <- "ping " + p
				return c.WriteControl(gorilla.PongMessage, []byte(p), time.Now().Add(testTimeout))
			})
			typ, msg, err := c.ReadMessage()
			if err != nil {
				events <- "error " + err.Error()
				return
			}
			events <- "message " + strconv.Itoa(typ) + " " + string(msg)
			c.ReadMessage() // until the test ends
		}, nil)
		addr, _ := startProxy(t, up)
		client, _ := dialRaw(t, addr, nil, nil)
		for _, f := range frames {
			client.writeFrame(t, f.fin, f.op, []byte(f.payload))
		}
		want := []string{"ping still there?", "message " + strconv.Itoa(gorilla.TextMessage) + " Hello, world"}
		for i, w := range want {
			select {
			case got := <-events:
				if got != w {
					t.Errorf("upstream event %d: got %q; want %q", i, got, w)
				}
			case <-time.After(testTimeout):
				t.Fatalf("upstream event %d: got nothing; want %q", i, w)
			}
		}
		pong := client.readFrame(t)
		if pong.Header.OpCode != ws.OpPong || string(pong.Payload) != "still there?" {
			t.Errorf("client got %v %q; want pong %q", pong.Header.OpCode, pong.Payload, "still there?")
		}
	})
}

func TestPingIsAnsweredByTheFarPeer(t *testing.T) {
	tests := []struct {
		name   string
		pinger string // client or upstream
		answer bool   // the far peer answers the ping
	}{
		{"client ping, upstream answers", "client", true},
		{"client ping, upstream silent", "client", false},
		{"upstream ping, client answers", "upstream", true},
		{"upstream ping, client silent", "upstream", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, upstream := rawPair(t)
			pinger, peer := client, upstream
			if tt.pinger == "upstream" {
				pinger, peer = upstream, client
			}
			payload := []byte("ping 42 \x00\xff")
			pinger.writeFrame(t, true, ws.OpPing, payload)

			got := peer.readFrame(t)
			if got.Header.OpCode != ws.OpPing || !bytes.Equal(got.Payload, payload) {
				t.Fatalf("far peer got %v %q; want ping %q", got.Header.OpCode, got.Payload, payload)
			}
			if tt.answer {
				peer.writeFrame(t, true, ws.OpPong, got.Payload)
				pong := pinger.readFrame(t)
				if pong.Header.OpCode != ws.OpPong || !bytes.Equal(pong.Payload, payload) {
					t.Errorf("pinger got %v %q; want pong %q", pong.Header.OpCode, pong.Payload, payload)
				}
				return
			}
			f, err := pinger.tryReadFrame(300 * time.Millisecond)
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Errorf("pinger got frame %v %q (err %v); want no frame", f.Header.OpCode, f.Payload, err)
			}
		})
	}

	t.Run("gorilla client and upstream", func(t *testing.T) {
		addr, _ := startProxy(t, startGorillaEcho(t))
		c, _ := dialGorilla(t, addr, nil)
		pongs := make(chan string, 1)
		c.SetPongHandler(func(p string) error {
			pongs <- p
			return nil
		})
		go c.ReadMessage() // runs the pong handler; ends when the test closes c
		if err := c.WriteControl(gorilla.PingMessage, []byte("are you there"), time.Now().Add(testTimeout)); err != nil {
			t.Fatalf("ping: got %v; want nil", err)
		}
		select {
		case got := <-pongs:
			if got != "are you there" {
				t.Errorf("pong payload: got %q; want %q", got, "are you there")
			}
		case <-time.After(testTimeout):
			t.Errorf("pong: got none; want one")
		}
	})
}

func TestPipelinedFrames(t *testing.T) {
	t.Run("client frame in the upgrade request's write", func(t *testing.T) {
		up := startRawUpstream(t, rawUpstreamOptions{})
		addr, _ := startProxy(t, up.URL)
		early := buildFrame(ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: testMask}, []byte("early bird"))
		client, _ := dialRaw(t, addr, nil, early)
		client.writeFrame(t, true, ws.OpBinary, []byte("late"))
		upstream := up.accept(t)
		for _, want := range []struct {
			op      ws.OpCode
			payload string
		}{{ws.OpText, "early bird"}, {ws.OpBinary, "late"}} {
			got := upstream.readFrame(t)
			if got.Header.OpCode != want.op || string(got.Payload) != want.payload {
				t.Errorf("upstream got %v %q; want %v %q", got.Header.OpCode, got.Payload, want.op, want.payload)
			}
		}
	})

	t.Run("upstream frame right behind its 101", func(t *testing.T) {
		ln := listenLocal(t)
		t.Cleanup(func() { ln.Close() })
		served := make(chan error, 1)
		go func() {
			conn, err := ln.Accept()
			if err != nil {
				served <- err
				return
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(testTimeout))
			buf := make([]byte, 4096)
			var head []byte
			for !bytes.Contains(head, []byte("\r\n\r\n")) {
				n, err := conn.Read(buf)
				if err != nil {
					served <- err
					return
				}
				head = append(head, buf[:n]...)
			}
			key := ""
			for line := range strings.SplitSeq(string(head), "\r\n") {
				if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Sec-WebSocket-Key") {
					key = strings.TrimSpace(v)
				}
			}
			answer := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
				acceptKey(key) + "\r\n\r\n"
			out := append([]byte(answer), buildFrame(ws.Header{Fin: true, OpCode: ws.OpText}, []byte("welcome"))...)
			_, err = conn.Write(out)
			served <- err
			conn.Read(buf) // until the client goes
		}()
		addr, _ := startProxy(t, &url.URL{Scheme: "ws", Host: ln.Addr().String()})
		client, _ := dialRaw(t, addr, nil, nil)
		got := client.readFrame(t)
		if got.Header.OpCode != ws.OpText || string(got.Payload) != "welcome" {
			t.Errorf("client got %v %q; want text %q", got.Header.OpCode, got.Payload, "welcome")
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("upstream: got %v; want nil", err)
			}
		case <-time.After(testTimeout):
			t.Errorf("upstream: got no answer within %v; want a 101 and a frame", testTimeout)
		}
	})
}

// TestHandshakeInPieces has the client's upgrade request and the
// upstream's answer each arrive in several writes, with a frame behind
// each head in the head's last write: the proxy keeps what it has read of
// a head across reads, and the frames behind it.
func TestHandshakeInPieces(t *testing.T) {
	early := buildFrame(ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Mask: testMask}, []byte("early bird"))
	welcome := buildFrame(ws.Header{Fin: true, OpCode: ws.OpText}, []byte("welcome"))
	// cut returns where to cut a head of n bytes: at the offsets given,
	// those not above 0 counted from its end (0: right after it).
	cut := func(n int, at ...int) []int {
		var out []int
		for _, a := range at {
			if a <= 0 {
				a += n
			}
			out = append(out, a)
		}
		return out
	}
	for _, tc := range []struct {
		name                string
		requestAt, answerAt []int // cuts in the heads
	}{
		{name: "request in three writes", requestAt: []int{5, 60}},
		{name: "answer in three writes", answerAt: []int{9, 40}},
		{name: "both cut inside the empty line", requestAt: []int{-3}, answerAt: []int{-1}},
		{name: "both cut after the head", requestAt: []int{0}, answerAt: []int{0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln := listenLocal(t)
			t.Cleanup(func() { ln.Close() })
			gotEarly := make(chan error, 1)
			go func() {
				conn, err := ln.Accept()
				if err != nil {
					gotEarly <- err
					return
				}
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(testTimeout))
				c := &rawConn{Conn: conn, br: bufio.NewReader(conn)}
				req, err := http.ReadRequest(c.br)
				if err != nil {
					gotEarly <- err
					return
				}
				answer := []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
					acceptKey(req.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n")
				at := cut(len(answer), tc.answerAt...)
				if err := writePieces(conn, append(answer, welcome...), at); err != nil {
					gotEarly <- err
					return
				}
				f, err := ws.ReadFrame(c.br)
				if err == nil && (f.Header.OpCode != ws.OpText || string(ws.UnmaskFrame(f).Payload) != "early bird") {
					err = fmt.Errorf("got %v %q; want text %q", f.Header.OpCode, ws.UnmaskFrame(f).Payload, "early bird")
				}
				gotEarly <- err
				c.br.ReadByte() // until the client goes
			}()
			addr, _ := startProxy(t, &url.URL{Scheme: "ws", Host: ln.Addr().String()})
			u, _ := url.Parse(addr)
			conn, err := net.DialTimeout("tcp", u.Host, testTimeout)
			if err != nil {
				t.Fatalf("dial: got %v; want nil", err)
			}
			t.Cleanup(func() { conn.Close() })
			req := upgradeRequest(t, addr+"/pieces", nil)
			if err := writePieces(conn, append(req, early...), cut(len(req), tc.requestAt...)); err != nil {
				t.Fatalf("write request: got %v; want nil", err)
			}
			client := &rawConn{Conn: conn, br: bufio.NewReader(conn), client: true}
			conn.SetReadDeadline(time.Now().Add(testTimeout))
			resp, err := http.ReadResponse(client.br, nil)
			if err != nil {
				t.Fatalf("read answer: got %v; want nil", err)
			}
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("answer: got %d; want 101", resp.StatusCode)
			}
			if got := client.readFrame(t); got.Header.OpCode != ws.OpText || string(got.Payload) != "welcome" {
				t.Errorf("client got %v %q; want text %q", got.Header.OpCode, got.Payload, "welcome")
			}
			select {
			case err := <-gotEarly:
				if err != nil {
					t.Errorf("upstream: got %v; want the early frame", err)
				}
			case <-time.After(testTimeout):
				t.Errorf("upstream: got nothing in %v; want the early frame", testTimeout)
			}
		})
	}
}

// writePieces writes b to conn cut at the offsets at, pausing between the
// writes so that the reader most likely reads each on its own.
func writePieces(conn net.Conn, b []byte, at []int) error {
	prev := 0
	for _, a := range append(at, len(b)) {
		if a > prev {
			if _, err := conn.Write(b[prev:a]); err != nil {
				return err
			}
			time.Sleep(20 * time.Millisecond)
		}
		prev = a
	}
	return nil
}

func TestFrameIsNotHeldBackByAPartialNextHeader(t *testing.T) {
	// A complete frame must be passed on even when the bytes behind it are
	// only the start of the next frame's header.
	tests := []struct {
		name  string
		split int // bytes of the next frame's header sent with the first frame
	}{
		{"1 byte", 1},
		{"2 bytes, no mask", 2},
		{"5 bytes", 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			eachDirection(t, func(t *testing.T, src, dst *rawConn) {
				first := src.frame(true, ws.OpText, []byte("complete frame"))
				second := src.frame(true, ws.OpText, []byte("next frame"))
				split := min(tt.split, len(second)-1)
				src.write(t, append(first, second[:split]...))
				if f := dst.readFrame(t); string(f.Payload) != "complete frame" {
					t.Fatalf("first frame: got %q; want %q", f.Payload, "complete frame")
				}
				src.write(t, second[split:])
				if f := dst.readFrame(t); string(f.Payload) != "next frame" {
					t.Errorf("second frame: got %q; want %q", f.Payload, "next frame")
				}
			})
		})
	}
}

// TestIdleCopiersParkAndWake checks that the copiers of quiet sessions
// give up their goroutines (on Linux), and that frames sent at any moment
// around the sweeps that park them, a frame split across the moment
// included, still arrive whole and in order.
func TestIdleCopiersParkAndWake(t *testing.T) {
	t.Parallel()
	const n = 6
	addr, p := startProxy(t, startGorillaEcho(t), onGoroutines) // copiers park; loops have none
	clients := make([]*rawConn, n)
	for i := range clients {
		clients[i], _ = dialRaw(t, addr, nil, nil)
		if got := probe(t, clients[i], "first"); !got.echoed {
			t.Fatalf("client %d: got close %d; want the echo", i, got.code)
		}
	}
	if runtime.GOOS == "linux" {
		waitUntil(t, "every copier parked", func() bool { return proxy.ParkedCopiers(p) == 2*n })
	}
	// Each client now speaks at its own pauses, spread over the sweeps'
	// period, some frames in two writes with a pause inside the header.
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			for round := range 4 {
				time.Sleep(time.Duration(900+170*((i+round)%5)) * time.Millisecond)
				msg := fmt.Sprintf("client %d round %d", i, round)
				frame := c.frame(true, ws.OpText, []byte(msg))
				if round%2 == 1 {
					c.write(t, frame[:1])
					time.Sleep(30 * time.Millisecond)
					frame = frame[1:]
				}
				c.write(t, frame)
				f := c.readFrame(t)
				if f.Header.OpCode != ws.OpText || string(f.Payload) != msg {
					t.Errorf("client %d round %d: got %v %q; want the echo %q", i, round, f.Header.OpCode, f.Payload, msg)
					return
				}
			}
		})
	}
	wg.Wait()
}
