package control_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/wschaos/wschaos/control"
	"github.com/wschaos/wschaos/proxy"
	"github.com/wschaos/wschaos/rules"
)

// rigTimeout bounds every wait in these tests: no step of a passing test
// comes near it, and a failing one ends instead of hanging.
const rigTimeout = 5 * time.Second

// rigSeed is the seed of every rig's proxy.
const rigSeed = 42

// rigRules are the rules of a rig unless its options say otherwise: each
// applies to one path only, so that sessions elsewhere are left alone.
func rigRules() []rules.Spec {
	return []rules.Spec{
		{
			Name: "after-close", Match: rules.MatchSpec{Path: "/after"},
			After: "300ms", Action: "close", Code: int64(4001), Reason: new("after rule"),
		},
		{
			Name: "count-close", Match: rules.MatchSpec{Path: "/count"},
			AfterMessages: new(int64(3)), Direction: "upstream",
			Action: "close", Code: "try_again_later", Reason: new("counted"),
		},
	}
}

// rigOptions adjust a rig.
type rigOptions struct {
	specs []rules.Spec // nil: rigRules
	token string
}

// rig is a proxy in front of a gorilla echo upstream, with its event log,
// its metrics and an admin server over them, all on loopback.
type rig struct {
	proxy    *proxy.Proxy
	wsURL    string // ws://host:port of the proxy
	upstream *url.URL
	apiURL   string // http://host:port of the admin server
	events   *control.EventLog
	metrics  *control.Metrics
	token    string
	client   *http.Client

	// reloadErr, if set, is what the admin server's Reload returns.
	reloadErr atomic.Pointer[string]
}

// newRig starts a rig that is torn down when the test ends.
func newRig(t *testing.T, opts rigOptions) *rig {
	t.Helper()
	specs := opts.specs
	if specs == nil {
		specs = rigRules()
	}
	set := compileRules(t, specs)
	r := &rig{
		upstream: startEcho(t),
		events:   control.NewEventLog(256),
		token:    opts.token,
	}
	r.proxy = &proxy.Proxy{
		Upstream:         r.upstream,
		HandshakeTimeout: rigTimeout,
		Logger:           zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)),
		Rules:            set,
		Seed:             rigSeed,
	}
	r.metrics = control.NewMetrics(r.proxy.Stats)
	r.proxy.Events = proxy.Sinks{r.events, r.metrics}
	r.wsURL = serveProxy(t, r.proxy)

	srv := &control.Server{
		Proxy:   r.proxy,
		Token:   opts.token,
		Events:  r.events,
		Metrics: r.metrics,
		Ready:   r.proxy.Ready,
		Logger:  zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)),
		Info:    control.Info{Version: "test", ProxyURL: r.wsURL, Upstream: r.upstream.String(), Seed: rigSeed},
		Reload: func() error {
			if msg := r.reloadErr.Load(); msg != nil {
				return errors.New(*msg)
			}
			r.proxy.SetRules(compileRules(t, specs))
			return nil
		},
	}
	r.apiURL, r.client = serveAdmin(t, srv.Handler())
	return r
}

// compileRules compiles specs, which must be valid.
func compileRules(t *testing.T, specs []rules.Spec) *rules.Set {
	t.Helper()
	set, errs := rules.Compile(specs, rules.Options{})
	if len(errs) > 0 {
		t.Fatalf("rules.Compile: got %v; want no errors", errs)
	}
	return set
}

// startEcho starts a gorilla/websocket echo upstream on loopback that
// accepts the subprotocol "chat", and returns its ws:// URL. Its
// connections are closed, and their handlers waited for, when the test
// ends.
func startEcho(t *testing.T) *url.URL {
	t.Helper()
	up := gorilla.Upgrader{Subprotocols: []string{"chat"}, CheckOrigin: func(*http.Request) bool { return true }}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[*gorilla.Conn]struct{}{}
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		wg.Add(1)
		defer wg.Done()
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		defer func() {
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			c.Close()
		}()
		for {
			typ, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(typ, msg); err != nil {
				return
			}
		}
	}))
	t.Cleanup(func() {
		srv.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		waitGroup(t, "echo handlers", &wg)
	})
	u, err := url.Parse("ws" + strings.TrimPrefix(srv.URL, "http"))
	if err != nil {
		t.Fatalf("parse %q: got %v; want nil", srv.URL, err)
	}
	return u
}

// waitGroup waits, bounded, for wg.
func waitGroup(t *testing.T, what string, wg *sync.WaitGroup) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(rigTimeout):
		t.Errorf("%s: got still running after %v; want returned", what, rigTimeout)
	}
}

// serveProxy serves p on a loopback port until the test ends, waits until
// it is ready and returns its ws:// URL. Serve's return is checked when the
// proxy is closed.
func serveProxy(t *testing.T, p *proxy.Proxy) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: got %v; want nil", err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("proxy Close: got %v; want nil", err)
		}
		select {
		case err := <-served:
			if !errors.Is(err, proxy.ErrServerClosed) {
				t.Errorf("proxy Serve: got %v; want %v", err, proxy.ErrServerClosed)
			}
		case <-time.After(rigTimeout):
			t.Errorf("proxy Serve: got no return within %v of Close; want %v", rigTimeout, proxy.ErrServerClosed)
		}
	})
	waitUntil(t, "proxy ready", p.Ready)
	return "ws://" + ln.Addr().String()
}

// serveAdmin serves h on loopback until the test ends and returns its URL
// and a client for it.
func serveAdmin(t *testing.T, h http.Handler) (string, *http.Client) {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	tr := &http.Transport{Proxy: nil}
	t.Cleanup(tr.CloseIdleConnections)
	return ts.URL, &http.Client{Transport: tr, Timeout: rigTimeout}
}

// waitUntil polls cond until it holds, at most rigTimeout.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(rigTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: got false after %v; want true", what, rigTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// apiResponse is what the admin server answered.
type apiResponse struct {
	status int
	header http.Header
	body   []byte
}

// call sends a request to the admin server. hdr are header names and
// values in pairs; with a token the rig sends it unless hdr names
// Authorization (an empty value: no such header).
func (r *rig) call(t *testing.T, method, path, body string, hdr ...string) apiResponse {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), rigTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, r.apiURL+path, rd)
	if err != nil {
		t.Fatalf("new request %s %s: got %v; want nil", method, path, err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Del(hdr[i])
		if hdr[i+1] != "" {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: got %v; want a response", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: got %v; want nil", method, path, err)
	}
	return apiResponse{status: resp.StatusCode, header: resp.Header, body: b}
}

// getJSON GETs path, checks for a 200 JSON answer and decodes it into v.
func (r *rig) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	r.okJSON(t, r.call(t, http.MethodGet, path, ""), "GET "+path, v)
}

// postJSON POSTs body to path, checks for a 200 JSON answer and decodes it
// into v.
func (r *rig) postJSON(t *testing.T, path, body string, v any) {
	t.Helper()
	r.okJSON(t, r.call(t, http.MethodPost, path, body), "POST "+path, v)
}

func (r *rig) okJSON(t *testing.T, resp apiResponse, what string, v any) {
	t.Helper()
	if resp.status != http.StatusOK {
		t.Fatalf("%s: got status %d (%s); want 200", what, resp.status, resp.body)
	}
	if got := resp.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("%s: Content-Type: got %q; want %q", what, got, "application/json")
	}
	if err := json.Unmarshal(resp.body, v); err != nil {
		t.Fatalf("%s: decode %s: got %v; want nil", what, resp.body, err)
	}
}

// apiError checks that resp is a JSON error with this status and returns
// its message.
func apiError(t *testing.T, resp apiResponse, status int) string {
	t.Helper()
	if resp.status != status {
		t.Errorf("status: got %d (%s); want %d", resp.status, resp.body, status)
	}
	if got := resp.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type: got %q; want %q", got, "application/json")
	}
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(resp.body, &e); err != nil {
		t.Fatalf("error body %q: got %v; want JSON", resp.body, err)
	}
	if e.Error == "" {
		t.Errorf("error message of %s: got empty; want a message", resp.body)
	}
	return e.Error
}

// dial opens a WebSocket session through the proxy on path (with its
// query), offering the subprotocol "chat". It is closed when the test ends.
func (r *rig) dial(t *testing.T, path string) *gorilla.Conn {
	t.Helper()
	d := gorilla.Dialer{HandshakeTimeout: rigTimeout, Subprotocols: []string{"chat"}}
	ctx, cancel := context.WithTimeout(context.Background(), rigTimeout)
	defer cancel()
	c, resp, err := d.DialContext(ctx, r.wsURL+path, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: got %v (status %d); want nil", path, err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sessionOf returns the id of the open session whose client is c.
func (r *rig) sessionOf(t *testing.T, c *gorilla.Conn) uint64 {
	t.Helper()
	var list []proxy.SessionInfo
	r.getJSON(t, "/api/sessions", &list)
	for _, si := range list {
		if si.Client == c.LocalAddr().String() {
			return si.ID
		}
	}
	t.Fatalf("session of client %s: got none in %+v; want one", c.LocalAddr(), list)
	return 0
}

// waitEvent waits for an event of this kind for session id and returns it.
func (r *rig) waitEvent(t *testing.T, kind proxy.EventKind, id uint64) proxy.Event {
	t.Helper()
	var found proxy.Event
	waitUntil(t, "event "+string(kind)+" of session "+strconv.FormatUint(id, 10), func() bool {
		for _, e := range r.events.Last() {
			if e.Kind == kind && e.Session == id {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

// roundTrip sends msg and expects it back.
func roundTrip(t *testing.T, c *gorilla.Conn, msg string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(rigTimeout))
	if err := c.WriteMessage(gorilla.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write %q: got %v; want nil", msg, err)
	}
	c.SetReadDeadline(time.Now().Add(rigTimeout))
	_, got, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read echo of %q: got %v; want the message", msg, err)
	}
	if string(got) != msg {
		t.Fatalf("echo: got %q; want %q", got, msg)
	}
}

// readEnd reads until the connection ends and returns the error it ended
// with. Messages before it are an error.
func readEnd(t *testing.T, c *gorilla.Conn) error {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(rigTimeout))
	for {
		_, msg, err := c.ReadMessage()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("connection: got still open after %v; want ended", rigTimeout)
			}
			return err
		}
		t.Errorf("message before the end: got %q; want none", msg)
	}
}

// expectClose checks that the connection ends with a close frame carrying
// code and reason.
func expectClose(t *testing.T, c *gorilla.Conn, code int, reason string) {
	t.Helper()
	err := readEnd(t, c)
	var ce *gorilla.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("end: got %v; want close %d %q", err, code, reason)
	}
	if ce.Code != code || ce.Text != reason {
		t.Errorf("close: got %d %q; want %d %q", ce.Code, ce.Text, code, reason)
	}
}

func TestInfo(t *testing.T) {
	for _, token := range []string{"", "s3cret"} {
		t.Run("token="+strconv.FormatBool(token != ""), func(t *testing.T) {
			r := newRig(t, rigOptions{token: token})
			var got control.Info
			r.getJSON(t, "/api/info", &got)
			want := control.Info{Version: "test", ProxyURL: r.wsURL, Upstream: r.upstream.String(), Seed: rigSeed, Token: token != ""}
			if got != want {
				t.Errorf("GET /api/info: got %+v; want %+v", got, want)
			}
		})
	}
}

func TestSessions(t *testing.T) {
	r := newRig(t, rigOptions{})
	var empty []proxy.SessionInfo
	r.getJSON(t, "/api/sessions", &empty)
	if empty == nil || len(empty) != 0 {
		t.Errorf("GET /api/sessions with none open: got %#v; want []", empty)
	}

	before := time.Now()
	counted := r.dial(t, "/count?x=1")
	plain := r.dial(t, "/plain")
	after := time.Now()
	const msg = "hello, upstream" // 15 bytes
	for range 2 {
		roundTrip(t, counted, msg)
	}
	roundTrip(t, plain, msg)

	// A copier counts a message for the rules after it has relayed it, so
	// the echo can reach the client before its count: the list is read
	// again until the second count is in, for at most 5s.
	var list []proxy.SessionInfo
	for deadline := time.Now().Add(5 * time.Second); ; {
		list = nil
		r.getJSON(t, "/api/sessions", &list)
		if len(list) != 2 {
			t.Fatalf("GET /api/sessions: got %d sessions (%+v); want 2", len(list), list)
		}
		if rs := list[0].Rules; len(rs) != 1 || rs[0].Counted >= 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if list[0].ID >= list[1].ID {
		t.Errorf("session ids: got %d, %d; want ascending", list[0].ID, list[1].ID)
	}
	tests := []struct {
		name        string
		got         proxy.SessionInfo
		conn        *gorilla.Conn
		path, query string
		traffic     proxy.Traffic
		rules       []proxy.SessionRule
	}{
		{
			name: "counted", got: list[0], conn: counted, path: "/count", query: "x=1",
			traffic: proxy.Traffic{Frames: 2, Messages: 2, Bytes: 2 * uint64(len(msg))},
			rules:   []proxy.SessionRule{{Name: "count-close", Hit: true, Counted: 2}},
		},
		{
			name: "plain", got: list[1], conn: plain, path: "/plain",
			traffic: proxy.Traffic{Frames: 1, Messages: 1, Bytes: uint64(len(msg))},
			rules:   []proxy.SessionRule{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			si := tt.got
			if si.ID == 0 {
				t.Errorf("id: got 0; want an id")
			}
			if got, want := si.Client, tt.conn.LocalAddr().String(); got != want {
				t.Errorf("client: got %q; want %q", got, want)
			}
			if si.Path != tt.path || si.Query != tt.query {
				t.Errorf("path and query: got %q %q; want %q %q", si.Path, si.Query, tt.path, tt.query)
			}
			if si.Subprotocol != "chat" {
				t.Errorf("subprotocol: got %q; want %q", si.Subprotocol, "chat")
			}
			if si.Started.Before(before) || si.Started.After(after) {
				t.Errorf("started: got %v; want between %v and %v", si.Started, before, after)
			}
			if si.Client2Upstream != tt.traffic {
				t.Errorf("client_to_upstream: got %+v; want %+v", si.Client2Upstream, tt.traffic)
			}
			if si.Upstream2Client != tt.traffic {
				t.Errorf("upstream_to_client: got %+v; want %+v", si.Upstream2Client, tt.traffic)
			}
			if !slices.Equal(si.Rules, tt.rules) {
				t.Errorf("rules: got %+v; want %+v", si.Rules, tt.rules)
			}

			var one proxy.SessionInfo
			r.getJSON(t, "/api/sessions/"+strconv.FormatUint(si.ID, 10), &one)
			if one.ID != si.ID || one.Client != si.Client || one.Client2Upstream != si.Client2Upstream ||
				!one.Started.Equal(si.Started) || !slices.Equal(one.Rules, si.Rules) {
				t.Errorf("GET /api/sessions/%d: got %+v; want %+v", si.ID, one, si)
			}
		})
	}

	t.Run("after rule", func(t *testing.T) {
		c := r.dial(t, "/after")
		roundTrip(t, c, msg)
		var si proxy.SessionInfo
		r.getJSON(t, "/api/sessions/"+strconv.FormatUint(r.sessionOf(t, c), 10), &si)
		if len(si.Rules) != 1 || si.Rules[0].Name != "after-close" || !si.Rules[0].Hit {
			t.Fatalf("rules: got %+v; want after-close, hit", si.Rules)
		}
		// The rule's time counts from the client's 101, which follows the
		// session's start (its request head) by the upstream's handshake.
		if got, want := si.Rules[0].FiresAt, si.Started.Add(300*time.Millisecond); got.Before(want) || got.After(want.Add(time.Second)) {
			t.Errorf("fires_at: got %v; want %v, or up to 1s later", got, want)
		}
	})
}

// TestSessionClose closes one session by hand in each way a code can be
// written, and checks what the client gets, the answer and the fault event.
func TestSessionClose(t *testing.T) {
	r := newRig(t, rigOptions{})
	tests := []struct {
		name       string
		body       string
		wantCode   int
		wantReason string
	}{
		{"number", `{"code": 1012, "reason": "restart"}`, 1012, "restart"},
		{"name", `{"code": "try_again_later"}`, 1013, ""},
		{"name with reason", `{"code": "service_restart", "reason": "deploy"}`, 1012, "deploy"},
		{"number as text", `{"code": "4000", "reason": "app"}`, 4000, "app"},
		{"none", `{"code": "none"}`, gorilla.CloseNoStatusReceived, ""},
		{"longest reason", `{"code": 3000, "reason": "` + strings.Repeat("r", rules.MaxReason) + `"}`, 3000, strings.Repeat("r", rules.MaxReason)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := r.dial(t, "/manual")
			roundTrip(t, c, "before")
			id := r.sessionOf(t, c)
			var got struct {
				Session uint64 `json:"session"`
				Action  string `json:"action"`
			}
			r.postJSON(t, "/api/sessions/"+strconv.FormatUint(id, 10)+"/close", tt.body, &got)
			if got.Session != id || got.Action != "close" {
				t.Errorf("answer: got %+v; want session %d, action close", got, id)
			}
			expectClose(t, c, tt.wantCode, tt.wantReason)
			f := r.waitEvent(t, proxy.EventFault, id)
			if f.Rule != "manual" || f.Action != "close" || f.Code != tt.wantCode || f.Reason != tt.wantReason {
				t.Errorf("fault event: got rule %q action %q code %d reason %q; want manual close %d %q",
					f.Rule, f.Action, f.Code, f.Reason, tt.wantCode, tt.wantReason)
			}
			r.waitEvent(t, proxy.EventClosed, id)
		})
	}
}

func TestSessionResetDropHang(t *testing.T) {
	r := newRig(t, rigOptions{})
	post := func(t *testing.T, c *gorilla.Conn, action string) uint64 {
		t.Helper()
		id := r.sessionOf(t, c)
		var got struct {
			Session uint64 `json:"session"`
			Action  string `json:"action"`
		}
		r.postJSON(t, "/api/sessions/"+strconv.FormatUint(id, 10)+"/"+action, "", &got)
		if got.Session != id || got.Action != action {
			t.Errorf("answer: got %+v; want session %d, action %s", got, id, action)
		}
		return id
	}

	t.Run("reset", func(t *testing.T) {
		c := r.dial(t, "/manual")
		roundTrip(t, c, "before")
		id := post(t, c, "reset")
		err := readEnd(t, c)
		if err == nil || !strings.Contains(err.Error(), "connection reset by peer") {
			t.Errorf("end: got %v; want a connection reset", err)
		}
		if e := r.waitEvent(t, proxy.EventClosed, id); e.By != "proxy" || e.Why != "manual reset: tcp reset" {
			t.Errorf("closed event: got by %q why %q; want by proxy why %q", e.By, e.Why, "manual reset: tcp reset")
		}
	})

	t.Run("drop", func(t *testing.T) {
		c := r.dial(t, "/manual")
		roundTrip(t, c, "before")
		id := post(t, c, "drop")
		// A FIN without a close frame: the client reports 1006.
		err := readEnd(t, c)
		if !gorilla.IsCloseError(err, gorilla.CloseAbnormalClosure) || !strings.Contains(err.Error(), io.ErrUnexpectedEOF.Error()) {
			t.Errorf("end: got %v; want close 1006 (unexpected EOF)", err)
		}
		c.Close() // the session ends once the client closes its side too
		if e := r.waitEvent(t, proxy.EventClosed, id); e.By != "proxy" || e.Why != "manual drop: tcp fin" {
			t.Errorf("closed event: got by %q why %q; want by proxy why %q", e.By, e.Why, "manual drop: tcp fin")
		}
	})

	t.Run("hang", func(t *testing.T) {
		c := r.dial(t, "/manual")
		pongs := make(chan string, 4)
		c.SetPongHandler(func(data string) error {
			pongs <- data
			return nil
		})
		// Pongs are handled while reading: a reader runs until the
		// connection is closed.
		readDone := make(chan struct{})
		go func() {
			defer close(readDone)
			for {
				if _, _, err := c.NextReader(); err != nil {
					return
				}
			}
		}()
		t.Cleanup(func() {
			c.Close()
			select {
			case <-readDone:
			case <-time.After(rigTimeout):
				t.Errorf("reader: got still running after %v; want returned", rigTimeout)
			}
		})
		ping := func(data string) {
			t.Helper()
			if err := c.WriteControl(gorilla.PingMessage, []byte(data), time.Now().Add(rigTimeout)); err != nil {
				t.Fatalf("ping %q: got %v; want nil", data, err)
			}
		}

		ping("before")
		select {
		case got := <-pongs:
			if got != "before" {
				t.Errorf("pong: got %q; want %q", got, "before")
			}
		case <-time.After(rigTimeout):
			t.Fatalf("pong before the hang: got none within %v; want one", rigTimeout)
		}

		id := post(t, c, "hang")
		ping("during")
		select {
		case got := <-pongs:
			t.Errorf("pong during the hang: got %q; want none", got)
		case <-time.After(300 * time.Millisecond):
		}
		// The TCP connections stay open: the session is still there.
		if r.call(t, http.MethodGet, "/api/sessions/"+strconv.FormatUint(id, 10), "").status != http.StatusOK {
			t.Errorf("session %d during the hang: got gone; want open", id)
		}
		f := r.waitEvent(t, proxy.EventFault, id)
		if f.Rule != "manual" || f.Action != "hang" {
			t.Errorf("fault event: got rule %q action %q; want manual hang", f.Rule, f.Action)
		}
	})
}

func TestCloseMatching(t *testing.T) {
	r := newRig(t, rigOptions{})
	a1, a2, b := r.dial(t, "/a/1"), r.dial(t, "/a/2"), r.dial(t, "/b")
	for _, c := range []*gorilla.Conn{a1, a2, b} {
		roundTrip(t, c, "before")
	}

	var got struct {
		Closed int `json:"closed"`
	}
	r.postJSON(t, "/api/close", `{"code": 1001, "reason": "a only", "match": {"path": "/a/*"}}`, &got)
	if got.Closed != 2 {
		t.Errorf("POST /api/close with match: got closed %d; want 2", got.Closed)
	}
	expectClose(t, a1, 1001, "a only")
	expectClose(t, a2, 1001, "a only")
	roundTrip(t, b, "still open")

	r.postJSON(t, "/api/close", `{"code": "service_restart", "reason": "all"}`, &got)
	if got.Closed != 1 {
		t.Errorf("POST /api/close without match: got closed %d; want 1 (the a sessions are ending already)", got.Closed)
	}
	expectClose(t, b, 1012, "all")

	waitUntil(t, "no session open", func() bool { return len(r.proxy.Sessions()) == 0 })
	r.postJSON(t, "/api/close", `{"code": 1001}`, &got)
	if got.Closed != 0 {
		t.Errorf("POST /api/close with no session open: got closed %d; want 0", got.Closed)
	}
}

func TestRules(t *testing.T) {
	r := newRig(t, rigOptions{})
	ruleInfo := func(t *testing.T, name string) proxy.RuleInfo {
		t.Helper()
		var list []proxy.RuleInfo
		r.getJSON(t, "/api/rules", &list)
		for _, ri := range list {
			if ri.Name == name {
				return ri
			}
		}
		t.Fatalf("rule %q: got none in %+v; want it", name, list)
		return proxy.RuleInfo{}
	}

	var list []proxy.RuleInfo
	r.getJSON(t, "/api/rules", &list)
	want := []struct{ name, trigger, action string }{
		{"after-close", "after", "close"},
		{"count-close", "after_messages", "close"},
	}
	if len(list) != len(want) {
		t.Fatalf("GET /api/rules: got %+v; want %d rules", list, len(want))
	}
	for i, w := range want {
		ri := list[i]
		if ri.Name != w.name || ri.Trigger != w.trigger || ri.Action != w.action || !ri.Enabled || ri.Fired != 0 || ri.Summary == "" {
			t.Errorf("rule %d: got %+v; want %s, %s, %s, enabled, not fired, a summary", i, ri, w.name, w.trigger, w.action)
		}
	}

	switchRule := func(t *testing.T, sw string, want bool) {
		t.Helper()
		var got struct {
			Rule    string `json:"rule"`
			Enabled bool   `json:"enabled"`
		}
		r.postJSON(t, "/api/rules/after-close/"+sw, "", &got)
		if got.Rule != "after-close" || got.Enabled != want {
			t.Errorf("POST %s: got %+v; want after-close, enabled %v", sw, got, want)
		}
		if ri := ruleInfo(t, "after-close"); ri.Enabled != want {
			t.Errorf("after %s: got enabled %v; want %v", sw, ri.Enabled, want)
		}
	}

	t.Run("disabled does not fire", func(t *testing.T) {
		switchRule(t, "disable", false)
		c := r.dial(t, "/after")
		roundTrip(t, c, "before")
		id := r.sessionOf(t, c)
		var si proxy.SessionInfo
		r.getJSON(t, "/api/sessions/"+strconv.FormatUint(id, 10), &si)
		if len(si.Rules) != 1 || si.Rules[0].FiresAt.IsZero() {
			t.Fatalf("rules of session %d: got %+v; want after-close with fires_at", id, si.Rules)
		}
		// Past the time it would have fired, the session is still open.
		time.Sleep(time.Until(si.Rules[0].FiresAt) + 200*time.Millisecond)
		roundTrip(t, c, "after the rule's time")
		r.getJSON(t, "/api/sessions/"+strconv.FormatUint(id, 10), &si)
		if si.Rules[0].Fired {
			t.Errorf("session rule: got fired; want not fired")
		}
		if ri := ruleInfo(t, "after-close"); ri.Fired != 0 {
			t.Errorf("rule fired: got %d; want 0", ri.Fired)
		}
	})

	t.Run("enabled fires", func(t *testing.T) {
		switchRule(t, "enable", true)
		c := r.dial(t, "/after")
		id := r.sessionOf(t, c)
		expectClose(t, c, 4001, "after rule")
		f := r.waitEvent(t, proxy.EventFault, id)
		if f.Rule != "after-close" || f.Trigger != "after" || f.Code != 4001 {
			t.Errorf("fault event: got rule %q trigger %q code %d; want after-close after 4001", f.Rule, f.Trigger, f.Code)
		}
		if ri := ruleInfo(t, "after-close"); ri.Fired != 1 {
			t.Errorf("rule fired: got %d; want 1", ri.Fired)
		}
	})
}

func TestReload(t *testing.T) {
	r := newRig(t, rigOptions{})

	var got struct {
		Reloaded bool `json:"reloaded"`
		Rules    int  `json:"rules"`
	}
	r.postJSON(t, "/api/reload", "", &got)
	if !got.Reloaded || got.Rules != 2 {
		t.Errorf("POST /api/reload: got %+v; want reloaded, 2 rules", got)
	}

	msg := `rule "x": code: 1006 cannot be sent in a close frame`
	r.reloadErr.Store(&msg)
	resp := r.call(t, http.MethodPost, "/api/reload", "")
	if got, want := apiError(t, resp, http.StatusUnprocessableEntity), "the running rules stay: "+msg; got != want {
		t.Errorf("POST /api/reload failing: got %q; want %q", got, want)
	}

	t.Run("no reload", func(t *testing.T) {
		srv := &control.Server{Proxy: r.proxy}
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/api/reload", nil))
		resp := apiResponse{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
		apiError(t, resp, http.StatusNotImplemented)
	})
}

func TestEvents(t *testing.T) {
	r := newRig(t, rigOptions{})
	c := r.dial(t, "/manual?q=1")
	roundTrip(t, c, "before")
	id := r.sessionOf(t, c)
	r.postJSON(t, "/api/sessions/"+strconv.FormatUint(id, 10)+"/close", `{"code": 1012, "reason": "restart"}`, &struct{}{})
	expectClose(t, c, 1012, "restart")
	r.waitEvent(t, proxy.EventClosed, id)

	var all []proxy.Event
	r.getJSON(t, "/api/events", &all)
	var got []proxy.Event
	for _, e := range all {
		if e.Session == id {
			got = append(got, e)
		}
	}
	client := c.LocalAddr().String()
	want := []proxy.Event{
		{Kind: proxy.EventOpened, Session: id, Client: client, Path: "/manual", Query: "q=1", Subprotocol: "chat"},
		{Kind: proxy.EventFault, Session: id, Client: client, Path: "/manual", Query: "q=1", Subprotocol: "chat",
			By: "manual", Rule: "manual", Trigger: "manual", Action: "close", Code: 1012, Reason: "restart"},
		{Kind: proxy.EventClosed, Session: id, Client: client, Path: "/manual", Query: "q=1", Subprotocol: "chat",
			By: "proxy", Why: "manual close", Code: 1012, Reason: "restart", ClientCode: 1012, UpstreamCode: 1001},
	}
	if len(got) != len(want) {
		t.Fatalf("events of session %d: got %+v; want %d events", id, got, len(want))
	}
	for i := range want {
		g := got[i]
		if g.Time.IsZero() {
			t.Errorf("event %d time: got zero; want a time", i)
		}
		if g.Kind == proxy.EventClosed && g.Duration <= 0 {
			t.Errorf("closed event duration: got %v; want more than 0", g.Duration)
		}
		g.Time, g.Duration = time.Time{}, 0
		if g != want[i] {
			t.Errorf("event %d: got %+v; want %+v", i, g, want[i])
		}
	}
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	name string
	data proxy.Event
}

// followEvents opens GET /api/events?follow=1 and returns the events as
// they are read, and what closes the stream; it is closed when the test
// ends at the latest.
func (r *rig) followEvents(t *testing.T) (<-chan sseEvent, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.apiURL+"/api/events?follow=1", nil)
	if err != nil {
		cancel()
		t.Fatalf("new request: got %v; want nil", err)
	}
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	tr := &http.Transport{Proxy: nil, ResponseHeaderTimeout: rigTimeout}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET /api/events?follow=1: got %v; want a response", err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("GET /api/events?follow=1: got status %d; want 200", resp.StatusCode)
	}
	if got := resp.Header.Get("Content-Type"); got != "text/event-stream" {
		t.Errorf("Content-Type: got %q; want %q", got, "text/event-stream")
	}
	events := make(chan sseEvent, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		var data string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data = strings.TrimPrefix(line, "data: ")
			case line == "" && data != "":
				if err := json.Unmarshal([]byte(data), &ev.data); err != nil {
					ev.name = "bad data: " + err.Error()
				}
				select {
				case events <- ev:
				case <-ctx.Done():
					return
				}
				ev, data = sseEvent{}, ""
			}
		}
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			resp.Body.Close()
			select {
			case <-done:
			case <-time.After(rigTimeout):
				t.Errorf("event stream reader: got still running after %v; want returned", rigTimeout)
			}
			tr.CloseIdleConnections()
		})
	}
	t.Cleanup(stop)
	return events, stop
}

// nextEvent returns the next event of the stream, within rigTimeout.
func nextEvent(t *testing.T, events <-chan sseEvent) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-events:
		if !ok {
			t.Fatalf("event stream: got its end; want an event")
		}
		if ev.name != string(ev.data.Kind) {
			t.Errorf("event name: got %q; want the kind %q", ev.name, ev.data.Kind)
		}
		return ev
	case <-time.After(rigTimeout):
		t.Fatalf("event stream: got no event within %v; want one", rigTimeout)
		return sseEvent{}
	}
}

func TestEventsFollow(t *testing.T) {
	r := newRig(t, rigOptions{token: "s3cret"})
	first := r.dial(t, "/first")
	roundTrip(t, first, "before")
	firstID := r.sessionOf(t, first)

	events, _ := r.followEvents(t)
	// The kept events come first.
	if ev := nextEvent(t, events); ev.data.Kind != proxy.EventOpened || ev.data.Session != firstID {
		t.Fatalf("first event: got %s of session %d; want opened of session %d", ev.data.Kind, ev.data.Session, firstID)
	}

	// Then the live ones, as they happen.
	live := r.dial(t, "/live")
	roundTrip(t, live, "before")
	liveID := r.sessionOf(t, live)
	r.postJSON(t, "/api/sessions/"+strconv.FormatUint(liveID, 10)+"/close", `{"code": 1013}`, &struct{}{})
	expectClose(t, live, 1013, "")
	client := live.LocalAddr().String()
	for _, kind := range []proxy.EventKind{proxy.EventOpened, proxy.EventFault, proxy.EventClosed} {
		ev := nextEvent(t, events)
		if ev.data.Kind != kind || ev.data.Session != liveID || ev.data.Client != client {
			t.Errorf("live event: got %s of session %d from %s; want %s of session %d from %s",
				ev.data.Kind, ev.data.Session, ev.data.Client, kind, liveID, client)
		}
	}
}

// TestEventsFollowNoDuplicates subscribes while events keep coming: every
// event is sent once, in order, whether it was kept before the stream
// started or arrived after.
func TestEventsFollowNoDuplicates(t *testing.T) {
	const kept = 16
	log := control.NewEventLog(kept)
	srv := &control.Server{Proxy: &proxy.Proxy{}, Events: log}
	r := &rig{}
	r.apiURL, r.client = serveAdmin(t, srv.Handler())

	// As fast as it can, so that events arrive while a stream starts.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for id := uint64(1); ; id++ {
			select {
			case <-stop:
				return
			default:
			}
			log.Event(proxy.Event{Kind: proxy.EventOpened, Session: id})
		}
	}()
	t.Cleanup(func() {
		close(stop)
		waitGroup(t, "event source", &wg)
	})
	waitUntil(t, "events kept", func() bool { return len(log.Last()) == kept })

	for round := range 40 {
		events, stop := r.followEvents(t)
		var last uint64
		for range 3 * kept { // the kept ones, then live ones
			ev := nextEvent(t, events)
			if ev.data.Session <= last {
				t.Fatalf("stream %d: session of the event after %d: got %d; want a later one", round, last, ev.data.Session)
			}
			last = ev.data.Session
		}
		stop()
	}
}

func TestProbes(t *testing.T) {
	p := &proxy.Proxy{
		Upstream: startEcho(t),
		Logger:   zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)),
	}
	srv := &control.Server{Proxy: p, Ready: p.Ready, Token: "s3cret"}
	r := &rig{}
	r.apiURL, r.client = serveAdmin(t, srv.Handler())

	check := func(t *testing.T, path string, status int, want string) {
		t.Helper()
		resp := r.call(t, http.MethodGet, path, "")
		var got struct {
			Status string `json:"status"`
		}
		if err := json.Unmarshal(resp.body, &got); err != nil {
			t.Fatalf("GET %s: decode %q: got %v; want nil", path, resp.body, err)
		}
		if resp.status != status || got.Status != want {
			t.Errorf("GET %s: got %d %q; want %d %q", path, resp.status, got.Status, status, want)
		}
	}

	check(t, "/healthz", http.StatusOK, "ok")
	check(t, "/readyz", http.StatusServiceUnavailable, "not ready") // before Serve

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: got %v; want nil", err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	t.Cleanup(func() { p.Close() }) // if the test ends before its Shutdown
	waitUntil(t, "GET /readyz answers 200", func() bool {
		return r.call(t, http.MethodGet, "/readyz", "").status == http.StatusOK
	})
	check(t, "/readyz", http.StatusOK, "ready")
	check(t, "/healthz", http.StatusOK, "ok")

	ctx, cancel := context.WithTimeout(context.Background(), rigTimeout)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: got %v; want nil", err)
	}
	select {
	case err := <-served:
		if !errors.Is(err, proxy.ErrServerClosed) {
			t.Errorf("Serve: got %v; want %v", err, proxy.ErrServerClosed)
		}
	case <-time.After(rigTimeout):
		t.Fatalf("Serve: got no return within %v of Shutdown; want %v", rigTimeout, proxy.ErrServerClosed)
	}
	check(t, "/readyz", http.StatusServiceUnavailable, "not ready") // after Shutdown
	check(t, "/healthz", http.StatusOK, "ok")
}

func TestMetricsEndpoint(t *testing.T) {
	r := newRig(t, rigOptions{})
	roundTrip(t, r.dial(t, "/plain"), "hello")
	resp := r.call(t, http.MethodGet, "/metrics", "")
	if resp.status != http.StatusOK {
		t.Fatalf("GET /metrics: got status %d; want 200", resp.status)
	}
	if got := resp.header.Get("Content-Type"); !strings.HasPrefix(got, "text/plain") {
		t.Errorf("Content-Type: got %q; want text/plain", got)
	}
	for _, want := range []string{"wschaos_sessions_total 1", "wschaos_sessions_active 1", `wschaos_messages_total{direction="client"} 1`} {
		if !strings.Contains(string(resp.body), want) {
			t.Errorf("GET /metrics: got no line %q in:\n%s", want, resp.body)
		}
	}
	apiError(t, r.call(t, http.MethodPost, "/metrics", ""), http.StatusMethodNotAllowed)

	t.Run("none", func(t *testing.T) {
		srv := &control.Server{Proxy: r.proxy}
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		if rec.Code != http.StatusNotFound {
			t.Errorf("GET /metrics without Metrics: got %d; want 404", rec.Code)
		}
	})
}

func TestAuth(t *testing.T) {
	const token = "s3cret"
	r := newRig(t, rigOptions{token: token})
	tests := []struct {
		name   string
		method string
		path   string
		auth   string // the Authorization header; "" for none
		status int
	}{
		{"info, no header", "GET", "/api/info", "", 401},
		{"info, wrong token", "GET", "/api/info", "Bearer wrong", 401},
		{"info, longer token", "GET", "/api/info", "Bearer " + token + "x", 401},
		{"info, wrong scheme", "GET", "/api/info", "Basic " + token, 401},
		{"info, no scheme", "GET", "/api/info", token, 401},
		{"info", "GET", "/api/info", "Bearer " + token, 200},
		{"sessions, no header", "GET", "/api/sessions", "", 401},
		{"close, no header", "POST", "/api/close", "", 401},
		{"events, no header", "GET", "/api/events", "", 401},
		{"unknown path, no header", "GET", "/api/nope", "", 401},
		{"wrong method, no header", "GET", "/api/reload", "", 401},
		{"metrics, no header", "GET", "/metrics", "", 401},
		{"metrics, wrong token", "GET", "/metrics", "Bearer wrong", 401},
		{"metrics", "GET", "/metrics", "Bearer " + token, 200},
		{"page", "GET", "/", "", 200},
		{"healthz", "GET", "/healthz", "", 200},
		{"readyz", "GET", "/readyz", "", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := r.call(t, tt.method, tt.path, "", "Authorization", tt.auth)
			if tt.status != http.StatusUnauthorized {
				if resp.status != tt.status {
					t.Errorf("%s %s: got %d (%s); want %d", tt.method, tt.path, resp.status, resp.body, tt.status)
				}
				return
			}
			msg := apiError(t, resp, http.StatusUnauthorized)
			if !strings.Contains(msg, "token") {
				t.Errorf("error: got %q; want it to mention the token", msg)
			}
			if got, want := resp.header.Get("WWW-Authenticate"), `Bearer realm="wschaos"`; got != want {
				t.Errorf("WWW-Authenticate: got %q; want %q", got, want)
			}
		})
	}
}

// TestRequestErrors covers the answers to requests the API cannot carry
// out: each is a JSON error with the right status.
func TestRequestErrors(t *testing.T) {
	r := newRig(t, rigOptions{})
	c := r.dial(t, "/manual")
	roundTrip(t, c, "before")
	id := strconv.FormatUint(r.sessionOf(t, c), 10)
	long := strings.Repeat("é", 62) // 124 bytes
	tests := []struct {
		name      string
		method    string
		path      string
		body      string
		status    int
		allow     string // the Allow header of a 405
		wantError string // a part of the message
	}{
		{"bad JSON", "POST", "/api/sessions/" + id + "/close", `{"code": 1012`, 400, "", "bad JSON body"},
		{"not an object", "POST", "/api/close", `[1012]`, 400, "", "bad JSON body"},
		{"unknown field", "POST", "/api/sessions/" + id + "/close", `{"code": 1012, "bogus": true}`, 400, "", `unknown field "bogus"`},
		{"unknown match field", "POST", "/api/close", `{"code": 1012, "match": {"paht": "/x"}}`, 400, "", `unknown field "paht"`},
		{"no code", "POST", "/api/sessions/" + id + "/close", `{}`, 400, "", "code: is required"},
		{"empty body", "POST", "/api/close", ``, 400, "", "code: is required"},
		{"reason of 124 bytes", "POST", "/api/sessions/" + id + "/close", `{"code": 1012, "reason": "` + long + `"}`, 400, "", "reason: is 124 bytes"},
		{"reason of 124 bytes, all", "POST", "/api/close", `{"code": 1012, "reason": "` + long + `"}`, 400, "", "reason: is 124 bytes"},
		{"reason with none", "POST", "/api/sessions/" + id + "/close", `{"code": "none", "reason": "x"}`, 400, "", `reason: cannot go with code = "none"`},
		{"match on one session", "POST", "/api/sessions/" + id + "/close", `{"code": 1012, "match": {"path": "/x"}}`, 400, "", "match: picks sessions"},
		{"bad match", "POST", "/api/close", `{"code": 1012, "match": {"client": "nope"}}`, 400, "", `match.client: "nope" is not a CIDR`},
		{"unknown session", "GET", "/api/sessions/999999", "", 404, "", "session 999999: no such session"},
		{"unknown session, reset", "POST", "/api/sessions/999999/reset", "", 404, "", "session 999999: no such session"},
		{"unknown session, close", "POST", "/api/sessions/999999/close", `{"code": 1000}`, 404, "", "session 999999: no such session"},
		{"non-numeric id", "GET", "/api/sessions/abc", "", 404, "", `session "abc": not a session id`},
		{"negative id", "GET", "/api/sessions/-1", "", 404, "", "not a session id"},
		{"non-numeric id, drop", "POST", "/api/sessions/abc/drop", "", 404, "", "not a session id"},
		{"unknown action", "POST", "/api/sessions/" + id + "/explode", "", 404, "", `no such action "explode"`},
		{"unknown rule", "POST", "/api/rules/nope/enable", "", 404, "", `rule "nope": no such rule`},
		{"unknown switch", "POST", "/api/rules/after-close/toggle", "", 404, "", "enable or /disable"},
		{"GET on close", "GET", "/api/close", "", 405, "POST", "method GET not allowed"},
		{"GET on an action", "GET", "/api/sessions/" + id + "/close", "", 405, "POST", "method GET not allowed"},
		{"GET on reload", "GET", "/api/reload", "", 405, "POST", "method GET not allowed"},
		{"POST on sessions", "POST", "/api/sessions", "", 405, "GET", "method POST not allowed"},
		{"POST on a session", "POST", "/api/sessions/" + id, "", 405, "GET", "method POST not allowed"},
		{"DELETE on rules", "DELETE", "/api/rules", "", 405, "GET", "method DELETE not allowed"},
		{"POST on events", "POST", "/api/events", "", 405, "GET", "method POST not allowed"},
		{"unknown API path", "GET", "/api/nope", "", 404, "", "no such endpoint: /api/nope"},
		{"unknown API path, POST", "POST", "/api/sessions/" + id + "/close/now", "", 404, "", "no such endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := r.call(t, tt.method, tt.path, tt.body)
			msg := apiError(t, resp, tt.status)
			if !strings.Contains(msg, tt.wantError) {
				t.Errorf("error: got %q; want it to contain %q", msg, tt.wantError)
			}
			if got := resp.header.Get("Allow"); got != tt.allow {
				t.Errorf("Allow: got %q; want %q", got, tt.allow)
			}
		})
	}
	// None of it touched the session.
	roundTrip(t, c, "after")
}

// TestCodeErrorsMatchConfig checks that the API refuses a code with the
// very words the configuration's validator uses for it in a rule.
func TestCodeErrorsMatchConfig(t *testing.T) {
	r := newRig(t, rigOptions{})
	c := r.dial(t, "/manual")
	roundTrip(t, c, "before")
	id := strconv.FormatUint(r.sessionOf(t, c), 10)
	tests := []struct {
		name string
		json string // the code as the API gets it
		toml any    // the code as a rule has it
	}{
		{"1006", `1006`, int64(1006)},
		{"1005", `1005`, int64(1005)},
		{"999", `999`, int64(999)},
		{"nope", `"nope"`, "nope"},
		{"1015", `1015`, int64(1015)},
		{"5000", `5000`, int64(5000)},
		{"1006 as text", `"1006"`, "1006"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs := rules.Compile([]rules.Spec{{Name: "c", On: "connect", Action: "close", Code: tt.toml}}, rules.Options{})
			if len(errs) != 1 || errs[0].Field != "code" {
				t.Fatalf("rules.Compile: got %v; want one error on code", errs)
			}
			want := errs[0].Field + ": " + errs[0].Msg
			for _, path := range []string{"/api/sessions/" + id + "/close", "/api/close"} {
				resp := r.call(t, http.MethodPost, path, `{"code": `+tt.json+`}`)
				if got := apiError(t, resp, http.StatusBadRequest); got != want {
					t.Errorf("POST %s: got %q; want %q", path, got, want)
				}
			}
		})
	}

	t.Run("match", func(t *testing.T) {
		_, errs := rules.Compile([]rules.Spec{{Name: "m", On: "connect", Action: "reset", Match: rules.MatchSpec{Client: "nope"}}}, rules.Options{})
		if len(errs) != 1 {
			t.Fatalf("rules.Compile: got %v; want one error", errs)
		}
		want := errs[0].Field + ": " + errs[0].Msg
		resp := r.call(t, http.MethodPost, "/api/close", `{"code": 1001, "match": {"client": "nope"}}`)
		if got := apiError(t, resp, http.StatusBadRequest); got != want {
			t.Errorf("POST /api/close: got %q; want %q", got, want)
		}
	})
	roundTrip(t, c, "after")
}

func TestCrossOrigin(t *testing.T) {
	r := newRig(t, rigOptions{})
	host := strings.TrimPrefix(r.apiURL, "http://")
	tests := []struct {
		name   string
		method string
		hdr    []string
		status int
	}{
		{"no browser headers", "POST", nil, 200},
		{"same origin", "POST", []string{"Sec-Fetch-Site", "same-origin"}, 200},
		{"typed by the user", "POST", []string{"Sec-Fetch-Site", "none"}, 200},
		{"matching Origin", "POST", []string{"Origin", "http://" + host}, 200},
		{"cross site", "POST", []string{"Sec-Fetch-Site", "cross-site"}, 403},
		{"same site", "POST", []string{"Sec-Fetch-Site", "same-site"}, 403},
		{"other Origin", "POST", []string{"Origin", "http://evil.example"}, 403},
		{"other port", "POST", []string{"Origin", "http://127.0.0.1:1"}, 403},
		{"cross site GET", "GET", []string{"Sec-Fetch-Site", "cross-site"}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := "/api/rules/after-close/disable"
			if tt.method == http.MethodGet {
				path = "/api/rules"
			}
			resp := r.call(t, tt.method, path, "", tt.hdr...)
			if tt.status == http.StatusForbidden {
				apiError(t, resp, http.StatusForbidden)
				return
			}
			if resp.status != tt.status {
				t.Errorf("%s %s: got %d (%s); want %d", tt.method, path, resp.status, resp.body, tt.status)
			}
		})
	}
}

func TestSecurityHeaders(t *testing.T) {
	r := newRig(t, rigOptions{})
	for _, path := range []string{"/", "/api/info", "/api/nope"} {
		t.Run(path, func(t *testing.T) {
			resp := r.call(t, http.MethodGet, path, "")
			for k, want := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"} {
				if got := resp.header.Get(k); got != want {
					t.Errorf("%s: got %q; want %q", k, got, want)
				}
			}
			if resp.header.Get("Content-Security-Policy") == "" {
				t.Errorf("Content-Security-Policy: got none; want one")
			}
		})
	}
}

// A body is one JSON value: more after it is a bad body (400), not ignored.
func TestBodyWithMoreThanOneJSONValue(t *testing.T) {
	fake := newFake()
	srv := httptest.NewServer((&control.Server{Proxy: fake}).Handler())
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/api/close", "application/json",
		strings.NewReader(`{"code": 1012} {"code": "not a code", "bogus": true}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("POST /api/close with two JSON values: %d %s; want 400; injected: %+v", resp.StatusCode, b, fake.takeInjected())
	}
}

// HEAD /api/events?follow=1 is answered with the stream's headers and
// ends: net/http drops a HEAD response's body without an error, so a
// stream would never see its client go, and the next request on the
// connection would hang.
func TestFollowHead(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	events := control.NewEventLog(10)
	hs := &http.Server{Handler: (&control.Server{Proxy: newFake(), Events: events}).Handler()}
	go hs.Serve(ln)
	defer hs.Close() // does not wait for handlers

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	fmt.Fprintf(conn, "HEAD /api/events?follow=1 HTTP/1.1\r\nHost: x\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	resp, err := http.ReadResponse(br, &http.Request{Method: "HEAD"})
	if err != nil {
		t.Fatalf("HEAD: %v", err)
	}
	t.Logf("HEAD answered %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if resp, err = http.ReadResponse(br, nil); err != nil {
		t.Errorf("GET /healthz after HEAD /api/events?follow=1 on the same connection: %v", err)
	}
	conn.Close()
	for i := 0; i < 5; i++ { // events are "sent" to the gone client without error
		events.Event(proxy.Event{Kind: proxy.EventOpened, Session: uint64(i + 1)})
	}
	time.Sleep(time.Second)
	buf := make([]byte, 1<<20)
	if st := string(buf[:runtime.Stack(buf, true)]); strings.Contains(st, "control.(*Server).follow") {
		t.Errorf("1s after the client closed its connection, the follow handler still runs")
	}
}

// A path that is neither the API nor one of the page's files is an
// unknown endpoint, answered with a JSON error; the page's files are
// served as before.
func TestUnknownPathIsJSONError(t *testing.T) {
	srv := httptest.NewServer((&control.Server{Proxy: newFake()}).Handler())
	defer srv.Close()
	for _, tc := range []struct {
		path   string
		status int
		ctype  string
	}{
		{"/nope", http.StatusNotFound, "application/json"},
		{"/metrics", http.StatusNotFound, "application/json"}, // no Metrics given
		{"/", http.StatusOK, "text/html; charset=utf-8"},
		{"/app.js", http.StatusOK, "text/javascript; charset=utf-8"},
	} {
		resp, err := http.Get(srv.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != tc.ctype {
			t.Errorf("GET %s: got %d %q (%.60q); want %d %q", tc.path, resp.StatusCode,
				resp.Header.Get("Content-Type"), b, tc.status, tc.ctype)
		}
	}
}
