package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/wschaos/wschaos/config"
	"github.com/wschaos/wschaos/proxy"
)

// syncBuffer is a bytes.Buffer that the program's logger and the test can
// use at the same time.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// running is the program started by startRun.
type running struct {
	cancel context.CancelFunc
	done   chan error // receives run's result
	stderr *syncBuffer
}

// startRun starts run with args in a goroutine and waits for its
// "listening" log line, which args must ask to be JSON. It returns the line.
func startRun(t *testing.T, args ...string) (*running, map[string]any) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1), stderr: &syncBuffer{}}
	if args[0] == "run" && !slices.Contains(args, "--admin-listen") {
		// Tests run side by side: no fixed admin port.
		args = append(args, "--admin-listen", "127.0.0.1:0")
	}
	go func() { r.done <- run(ctx, args, io.Discard, r.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(15 * time.Second):
			t.Errorf("run did not return within 15s of its context ending; log:\n%s", r.stderr)
		}
	})

	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if line := logLine(r.stderr.String(), "listening"); line != nil {
			return r, line
		}
		select {
		case err := <-r.done:
			r.done <- err // for Cleanup
			t.Fatalf("run returned %v before listening; log:\n%s", err, r.stderr)
		case <-deadline:
			t.Fatalf("no \"listening\" line within 10s; log:\n%s", r.stderr)
		case <-tick.C:
		}
	}
}

// logLine returns the first JSON log line whose msg is msg, or nil.
func logLine(log, msg string) map[string]any {
	for _, l := range strings.Split(log, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
			return m
		}
	}
	return nil
}

// stop cancels the program's context and returns what run returned, failing
// if it takes more than a few seconds.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for Cleanup
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("run did not return within 5s of its context ending; log:\n%s", r.stderr)
		return nil
	}
}

// proxyURL returns the "url" of a "listening" line, checking that it is a
// ws:// URL on loopback.
func proxyURL(t *testing.T, line map[string]any) *url.URL {
	t.Helper()
	s, _ := line["url"].(string)
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "ws" || u.Hostname() != "127.0.0.1" || u.Port() == "" || u.Port() == "0" {
		t.Fatalf("url: got %q; want ws://127.0.0.1:PORT", s)
	}
	return u
}

func dial(t *testing.T, u string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	conn, resp, err := d.DialContext(ctx, u, nil)
	if err != nil {
		t.Fatalf("dial %s: got %v; want %v", u, err, nil)
	}
	resp.Body.Close()
	t.Cleanup(func() { conn.Close() })
	return conn
}

// roundTrip sends msg and returns the message that comes back.
func roundTrip(t *testing.T, conn *websocket.Conn, msg string) string {
	t.Helper()
	conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write: got %v; want %v", err, nil)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	typ, got, err := conn.ReadMessage()
	if err != nil {
		t.Fatalf("read: got %v; want %v", err, nil)
	}
	if typ != websocket.TextMessage {
		t.Errorf("message type: got %v; want %v", typ, websocket.TextMessage)
	}
	return string(got)
}

// wantClose reads until the connection is closed and checks the code.
func wantClose(t *testing.T, conn *websocket.Conn, code int) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := conn.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("got %v; want close %v", err, code)
		}
		if ce.Code != code {
			t.Errorf("close code: got %v; want %v", ce.Code, code)
		}
		return
	}
}

func TestRunEcho(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  []string
		loops float64
	}{
		{"on goroutines", []string{"--loops", "0"}, 0},
		{"on a loop", []string{"--loops", "1"}, 1},
		{"by default", nil, -1}, // a loop per CPU: one at least
	} {
		t.Run(tc.name, func(t *testing.T) { testRunEcho(t, tc.args, tc.loops) })
	}
}

func testRunEcho(t *testing.T, extra []string, loops float64) {
	r, line := startRun(t, append([]string{"run", "--listen", "127.0.0.1:0", "--log-format", "json"}, extra...)...)
	if got, _ := line["loops"].(float64); loops >= 0 && got != loops || loops < 0 && got < 1 {
		t.Errorf("loops: got %v; want %v (-1: one or more)", got, loops)
	}
	if got := line["upstream"]; got != "echo" {
		t.Errorf("upstream: got %v; want %v", got, "echo")
	}
	if got := line["version"]; got != version {
		t.Errorf("version: got %v; want %v", got, version)
	}
	u := proxyURL(t, line)

	conn := dial(t, u.String()+"/chat?room=1")
	for _, msg := range []string{"hello", "wschaos", strings.Repeat("x", 70000)} {
		if got := roundTrip(t, conn, msg); got != msg {
			t.Errorf("echo: got %d bytes %.20q; want %d bytes %.20q", len(got), got, len(msg), msg)
		}
	}

	t.Run("plain HTTP", func(t *testing.T) {
		client := &http.Client{Timeout: 5 * time.Second}
		resp, err := client.Get("http://" + u.Host + "/")
		if err != nil {
			t.Fatalf("GET: got %v; want %v", err, nil)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if err != nil {
			t.Fatalf("read body: got %v; want %v", err, nil)
		}
		if resp.StatusCode != http.StatusOK {
			t.Errorf("status: got %v; want %v", resp.StatusCode, http.StatusOK)
		}
		if !strings.Contains(string(body), "echo") {
			t.Errorf("body: got %q; want it to contain %q", body, "echo")
		}
	})

	// A graceful shutdown: the session gets 1001 Going Away and run
	// returns nil.
	r.cancel()
	wantClose(t, conn, websocket.CloseGoingAway)
	if err := r.stop(t); err != nil {
		t.Errorf("run: got %v; want %v", err, nil)
	}
	for _, msg := range []string{"shutting down", "stopped"} {
		if logLine(r.stderr.String(), msg) == nil {
			t.Errorf("log: got %s; want a %q line", r.stderr, msg)
		}
	}
}

// upstreamServer is a WebSocket server on loopback that answers every
// message with "upstream: " and the message.
func upstreamServer(t *testing.T) *httptest.Server {
	t.Helper()
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		for {
			typ, msg, err := conn.ReadMessage()
			if err != nil {
				return
			}
			if err := conn.WriteMessage(typ, append([]byte("upstream: "), msg...)); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestRunUpstreamOverride(t *testing.T) {
	srv := upstreamServer(t)
	upstream := "ws" + strings.TrimPrefix(srv.URL, "http") + "/"

	// The file names an upstream nothing listens on; the flag wins.
	cfg := filepath.Join(t.TempDir(), "wschaos.toml")
	if err := os.WriteFile(cfg, []byte("[proxy]\nlisten = \"127.0.0.1:0\"\nupstream = \"ws://127.0.0.1:1/\"\n\n[log]\nformat = \"json\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"flags only", []string{"run", "--listen", "127.0.0.1:0", "--log-format", "json", "--upstream", upstream}},
		{"flag over file", []string{"run", "--config", cfg, "--upstream", upstream}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, line := startRun(t, tt.args...)
			if got := line["upstream"]; got != upstream {
				t.Errorf("upstream: got %v; want %v", got, upstream)
			}
			conn := dial(t, proxyURL(t, line).String()+"/")
			if got, want := roundTrip(t, conn, "ping"), "upstream: ping"; got != want {
				t.Errorf("got %q; want %q", got, want)
			}
			r.cancel()
			wantClose(t, conn, websocket.CloseGoingAway)
			if err := r.stop(t); err != nil {
				t.Errorf("run: got %v; want %v", err, nil)
			}
		})
	}
}

// When run fails after starting its "reload" goroutine (here the admin
// listener cannot be opened), the goroutine ends with it: no more polling
// of the file, no reload of a closed proxy.
func TestRunStopsWatcherOnError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "c.toml")
	os.WriteFile(path, []byte("[log]\nformat = \"json\"\n"), 0o644)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &syncBuffer{}
	err = run(ctx, []string{"run", "--config", path, "--listen", "127.0.0.1:0", "--admin-listen", busy.Addr().String()}, &syncBuffer{}, stderr)
	if err == nil || !strings.Contains(err.Error(), "admin listen") {
		t.Fatalf("run: %v; want an admin listen error", err)
	}
	os.WriteFile(path, []byte("[log]\nformat = \"json\"\n[[rule]]\nname = \"x\"\non = \"connect\"\naction = \"reset\"\n"), 0o644)
	time.Sleep(1500 * time.Millisecond)
	buf := make([]byte, 1<<20)
	if st := string(buf[:runtime.Stack(buf, true)]); strings.Contains(st, "(*watcher).run") {
		t.Errorf("run returned (%v), but its reload goroutine still runs", err)
	}
	if strings.Contains(stderr.String(), "rules reloaded") {
		t.Errorf("after run returned, the leaked watcher reloaded rules:\n%s", stderr)
	}
}

// The watcher compares the file with the bytes run loaded, so a change
// made between the load and the watcher's start is applied.
func TestWatcherSeesChangeMadeDuringStartup(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.toml")
	a := []byte("[[rule]]\nname = \"a\"\non = \"connect\"\naction = \"reset\"\n")
	b := []byte("[[rule]]\nname = \"b\"\non = \"connect\"\naction = \"reset\"\n")
	os.WriteFile(path, a, 0o644)
	cfg, err := config.Load(path) // what runProxy does at startup
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy.Proxy{Rules: cfg.RuleSet}
	os.WriteFile(path, b, 0o644) // the file changes before the watcher starts
	w := &watcher{path: path, p: p, log: zap.NewNop(), hup: make(chan os.Signal), last: a}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.run(ctx) }()
	time.Sleep(2500 * time.Millisecond) // more than two polls
	cancel()
	<-done
	if name := p.Rules.Rules[0].Name; name != "b" {
		t.Errorf("the file holds rule b, the proxy still runs rule %q after two polls", name)
	}
}
