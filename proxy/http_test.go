package proxy_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	gorilla "github.com/gorilla/websocket"
	"go.uber.org/zap"

	"github.com/wschaos/wschaos/proxy"
)

// plainOrigin answers plain HTTP requests the way the tests expect the
// upstream's http origin to: /echo sends the body back with 201, /teapot
// answers 418, anything else describes the request.
func plainOrigin(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Origin", "upstream")
	switch r.URL.Path {
	case "/echo":
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusCreated)
		w.Write(body)
	case "/teapot":
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "short and stout\n")
	default:
		io.WriteString(w, r.Method+" "+r.URL.RequestURI()+" forwarded-for="+r.Header.Get("X-Forwarded-For"))
	}
}

func TestPlainHTTPIsReverseProxied(t *testing.T) {
	up := startGorillaServer(t, gorilla.Upgrader{}, gorillaEcho, plainOrigin)
	addr, _ := startProxy(t, up)
	base := httpURL(addr)
	big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	tests := []struct {
		name       string
		method     string
		path       string
		body       []byte
		wantStatus int
		wantBody   []byte
	}{
		{"GET", http.MethodGet, "/hello?x=1&y=2", nil, http.StatusOK, []byte("GET /hello?x=1&y=2 forwarded-for=127.0.0.1")},
		{"GET with status", http.MethodGet, "/teapot", nil, http.StatusTeapot, []byte("short and stout\n")},
		{"POST with body", http.MethodPost, "/echo", []byte(`{"answer":42}`), http.StatusCreated, []byte(`{"answer":42}`)},
		{"POST with large body", http.MethodPost, "/echo", big, http.StatusCreated, big},
	}
	client := noProxyClient(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(testContext(t), tt.method, base+tt.path, bytes.NewReader(tt.body))
			if err != nil {
				t.Fatalf("new request: got %v; want nil", err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s %s: got %v; want nil", tt.method, tt.path, err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("read body: got %v; want nil", err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status: got %d; want %d", resp.StatusCode, tt.wantStatus)
			}
			if !bytes.Equal(body, tt.wantBody) {
				if len(body) < 200 {
					t.Errorf("body: got %q; want %q", body, tt.wantBody)
				} else {
					t.Errorf("body: %s", diffBytes(body, tt.wantBody))
				}
			}
			if got := resp.Header.Get("X-Origin"); got != "upstream" {
				t.Errorf("X-Origin: got %q; want %q", got, "upstream")
			}
		})
	}

	t.Run("WebSocket after plain request on the same listener", func(t *testing.T) {
		c, _ := dialGorilla(t, addr+"/ws", nil)
		echoOnce(t, c, "still a websocket proxy")
	})
}

func TestCloseReleasesPlainHTTPConnections(t *testing.T) {
	// The upstream counts the connections open to it.
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(plainOrigin))
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		mu.Lock()
		defer mu.Unlock()
		switch s {
		case http.StateNew:
			open[c] = true
		case http.StateClosed, http.StateHijacked:
			delete(open, c)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	openConns := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(open)
	}

	addr, p := startProxy(t, wsURLOf(t, srv))
	client := noProxyClient(t)
	for i := range 3 {
		resp, err := client.Get(httpURL(addr) + "/page")
		if err != nil {
			t.Fatalf("GET %d: got %v; want nil", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasPrefix(string(body), "GET /page") {
			t.Fatalf("GET %d body: got %q; want it to start with %q", i, body, "GET /page")
		}
	}
	if n := openConns(); n == 0 {
		t.Fatalf("upstream connections while serving: got %d; want at least 1", n)
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close: got %v; want nil", err)
	}
	deadline := time.Now().Add(testTimeout)
	for openConns() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := openConns(); n != 0 {
		t.Errorf("upstream connections %v after Close: got %d; want 0", testTimeout, n)
	}
}

func TestUpgradeOnKeptAliveConnection(t *testing.T) {
	up := startGorillaServer(t, gorilla.Upgrader{}, gorillaEcho, plainOrigin)
	addr, _ := startProxy(t, up)
	conn, br := dialTCP(t, addr)
	host := strings.TrimPrefix(addr, "ws://")
	if _, err := io.WriteString(conn, "GET /first HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
		t.Fatalf("write: got %v; want nil", err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: got %v; want nil", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := "GET /first forwarded-for=127.0.0.1"; string(body) != want {
		t.Fatalf("body: got %q; want %q", body, want)
	}

	// The same connection now asks for a WebSocket.
	if _, err := conn.Write(upgradeRequest(t, addr+"/second", nil)); err != nil {
		t.Fatalf("write upgrade: got %v; want nil", err)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read upgrade response: got %v; want nil", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status: got %d; want %d", resp.StatusCode, http.StatusSwitchingProtocols)
	}
	c := &rawConn{Conn: conn, br: br, client: true}
	c.writeFrame(t, true, ws.OpText, []byte("upgraded late"))
	if f := c.readFrame(t); f.Header.OpCode != ws.OpText || string(f.Payload) != "upgraded late" {
		t.Errorf("echo: got %v %q; want text %q", f.Header.OpCode, f.Payload, "upgraded late")
	}
}

func TestCloseEndsInFlightPlainHTTPRequest(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	up := startGorillaServer(t, gorilla.Upgrader{}, gorillaEcho, func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		io.WriteString(w, "answered after Close")
	})
	t.Cleanup(func() { close(release) }) // before the upstream's cleanup waits for it
	// The proxy's request to the upstream may fail, and be logged, after
	// the test has ended.
	addr, p := startProxy(t, up, func(p *proxy.Proxy) { p.Logger = zap.NewNop() })

	done := make(chan error, 1)
	client := noProxyClient(t)
	go func() {
		resp, err := client.Get(httpURL(addr) + "/slow")
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	select {
	case <-entered:
	case <-time.After(testTimeout):
		t.Fatalf("upstream request: got none within %v; want one", testTimeout)
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close: got %v; want nil", err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("GET: got a response; want the connection closed by Close")
		}
	case <-time.After(testTimeout):
		t.Errorf("GET: got still waiting %v after Close; want the connection closed", testTimeout)
	}
}
