package control_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/wschaos/wschaos/control"
	"github.com/wschaos/wschaos/proxy"
	"github.com/wschaos/wschaos/rules"
)

// fakeProxy is a control.Proxy with fixed sessions and rules that records
// the faults asked of it.
type fakeProxy struct {
	mu       sync.Mutex
	sessions []proxy.SessionInfo
	rules    []proxy.RuleInfo
	injected []injection
}

// injection is a manual fault the fake was asked for: on session id, or,
// for InjectMatching, on the sessions match picks (all: nil match).
type injection struct {
	id    uint64
	match string // InjectMatching: the match's String; "all" for nil
	m     proxy.Manual
}

func (f *fakeProxy) Sessions() []proxy.SessionInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.sessions)
}

func (f *fakeProxy) Session(id uint64) (proxy.SessionInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.sessions {
		if s.ID == id {
			return s, nil
		}
	}
	return proxy.SessionInfo{}, proxy.ErrNoSession
}

func (f *fakeProxy) Inject(id uint64, m proxy.Manual) error {
	if _, err := f.Session(id); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.injected = append(f.injected, injection{id: id, m: m})
	return nil
}

func (f *fakeProxy) InjectMatching(match *rules.Match, m proxy.Manual) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	desc, n := "all", 0
	if match != nil {
		desc = match.String()
	}
	for _, s := range f.sessions {
		if match == nil || match.Matches(&rules.Session{Path: s.Path}) {
			n++
		}
	}
	f.injected = append(f.injected, injection{match: desc, m: m})
	return n
}

func (f *fakeProxy) RuleInfos() []proxy.RuleInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.rules)
}

func (f *fakeProxy) EnableRule(name string, on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.rules {
		if f.rules[i].Name == name {
			f.rules[i].Enabled = on
			return nil
		}
	}
	return proxy.ErrNoRule
}

func (f *fakeProxy) takeInjected() []injection {
	f.mu.Lock()
	defer f.mu.Unlock()
	in := f.injected
	f.injected = nil
	return in
}

var started = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func newFake() *fakeProxy {
	return &fakeProxy{
		sessions: []proxy.SessionInfo{
			{ID: 3, Client: "127.0.0.1:50000", Path: "/a", Query: "k=v", Subprotocol: "chat", Started: started,
				Client2Upstream: proxy.Traffic{Frames: 2, Messages: 1, Bytes: 10},
				Upstream2Client: proxy.Traffic{Frames: 4, Messages: 3, Bytes: 30},
				Rules:           []proxy.SessionRule{{Name: "deploy", Hit: true, FiresAt: started.Add(time.Minute)}}},
			{ID: 7, Client: "127.0.0.1:50001", Path: "/b", Started: started, Rules: []proxy.SessionRule{}},
		},
		rules: []proxy.RuleInfo{
			{Name: "deploy", Summary: "deploy: after 1m0s -> close 1012", Trigger: "after", Action: "close", Enabled: true, Fired: 2, Limit: 5},
			{Name: "a/b c", Summary: "a/b c: on connect -> reset", Trigger: "on connect", Action: "reset", Enabled: true},
		},
	}
}

// serve serves s over loopback and returns a client of it with token.
func serve(t *testing.T, s *control.Server, token string) *control.Client {
	t.Helper()
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return &control.Client{Base: u, Token: token, HTTP: &http.Client{Timeout: 5 * time.Second}}
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestClientReads(t *testing.T) {
	fake := newFake()
	events := control.NewEventLog(10)
	kept := []proxy.Event{
		{Time: started, Kind: proxy.EventOpened, Session: 3, Client: "127.0.0.1:50000", Path: "/a", Duration: time.Millisecond},
		{Time: started.Add(time.Second), Kind: proxy.EventClosed, Session: 3, Client: "127.0.0.1:50000", By: "client", Why: "close frame", Code: 1000},
	}
	for _, e := range kept {
		events.Event(e)
	}
	info := control.Info{Version: "0.1.0", ProxyURL: "ws://127.0.0.1:8080", Upstream: "echo", Seed: 42}
	c := serve(t, &control.Server{Proxy: fake, Events: events, Info: info}, "")

	for _, tt := range []struct {
		name string
		call func(context.Context) (any, error)
		want any
	}{
		{"info", func(ctx context.Context) (any, error) { return c.Info(ctx) }, info},
		{"sessions", func(ctx context.Context) (any, error) { return c.Sessions(ctx) }, fake.sessions},
		{"session", func(ctx context.Context) (any, error) { return c.Session(ctx, 7) }, fake.sessions[1]},
		{"rules", func(ctx context.Context) (any, error) { return c.Rules(ctx) }, fake.rules},
		{"events", func(ctx context.Context) (any, error) { return c.Events(ctx) }, kept},
		{"raw", func(ctx context.Context) (any, error) {
			var raw json.RawMessage
			err := c.Do(ctx, http.MethodGet, "/api/info", nil, &raw)
			return strings.Contains(string(raw), `"proxy_url": "ws://127.0.0.1:8080"`), err
		}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.call(testContext(t))
			if err != nil {
				t.Fatalf("got %v; want %v", err, nil)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v; want %+v", got, tt.want)
			}
		})
	}
}

func TestClientActions(t *testing.T) {
	fake := newFake()
	reloads := 0
	c := serve(t, &control.Server{Proxy: fake, Reload: func() error { reloads++; return nil }}, "")

	for _, tt := range []struct {
		name string
		call func(context.Context) (any, error)
		want any         // what call returns besides its error
		inj  []injection // what the proxy was asked for
	}{
		{"close with a number", func(ctx context.Context) (any, error) { return nil, c.Close(ctx, 3, "1012", "restart") }, nil,
			[]injection{{id: 3, m: proxy.Manual{Action: rules.Close, Code: 1012, Reason: "restart"}}}},
		{"close with a name", func(ctx context.Context) (any, error) { return nil, c.Close(ctx, 3, "try_again_later", "") }, nil,
			[]injection{{id: 3, m: proxy.Manual{Action: rules.Close, Code: 1013}}}},
		{"close with none", func(ctx context.Context) (any, error) { return nil, c.Close(ctx, 7, "none", "") }, nil,
			[]injection{{id: 7, m: proxy.Manual{Action: rules.Close, Code: rules.CodeNone}}}},
		{"reset", func(ctx context.Context) (any, error) { return nil, c.Reset(ctx, 3) }, nil,
			[]injection{{id: 3, m: proxy.Manual{Action: rules.Reset}}}},
		{"drop", func(ctx context.Context) (any, error) { return nil, c.Drop(ctx, 3) }, nil,
			[]injection{{id: 3, m: proxy.Manual{Action: rules.Drop}}}},
		{"hang", func(ctx context.Context) (any, error) { return nil, c.Hang(ctx, 7) }, nil,
			[]injection{{id: 7, m: proxy.Manual{Action: rules.Hang}}}},
		{"close all", func(ctx context.Context) (any, error) { return c.CloseMatching(ctx, "1001", "bye", nil) }, 2,
			[]injection{{match: "all", m: proxy.Manual{Action: rules.Close, Code: 1001, Reason: "bye"}}}},
		{"close matching a path", func(ctx context.Context) (any, error) {
			return c.CloseMatching(ctx, "4000", "", &rules.MatchSpec{Path: "/a"})
		}, 1, []injection{{match: "path=/a", m: proxy.Manual{Action: rules.Close, Code: 4000}}}},
		{"close matching every key", func(ctx context.Context) (any, error) {
			return c.CloseMatching(ctx, "going_away", "", &rules.MatchSpec{Path: "/x*", Query: map[string]string{"k": "v"},
				Header: map[string]string{"X-Tenant": "acme"}, Subprotocol: "p", Client: "10.0.0.0/8"})
		}, 0, []injection{{match: "path=/x* query[k]=v header[x-tenant]=acme subprotocol=p client=10.0.0.0/8",
			m: proxy.Manual{Action: rules.Close, Code: 1001}}}},
		{"disable", func(ctx context.Context) (any, error) {
			err := c.EnableRule(ctx, "deploy", false)
			return fake.RuleInfos()[0].Enabled, err
		}, false, nil},
		{"enable", func(ctx context.Context) (any, error) {
			err := c.EnableRule(ctx, "deploy", true)
			return fake.RuleInfos()[0].Enabled, err
		}, true, nil},
		{"disable a name to escape", func(ctx context.Context) (any, error) {
			err := c.EnableRule(ctx, "a/b c", false)
			return fake.RuleInfos()[1].Enabled, err
		}, false, nil},
		{"reload", func(ctx context.Context) (any, error) {
			n, err := c.Reload(ctx)
			return []int{n, reloads}, err
		}, []int{2, 1}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.call(testContext(t))
			if err != nil {
				t.Fatalf("got %v; want %v", err, nil)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v; want %v", got, tt.want)
			}
			if inj := fake.takeInjected(); !reflect.DeepEqual(inj, tt.inj) {
				t.Errorf("injected: got %+v; want %+v", inj, tt.inj)
			}
		})
	}
}

func TestClientAPIErrors(t *testing.T) {
	_, codeErr := rules.ParseCode(int64(1006))
	if codeErr == nil {
		t.Fatalf("ParseCode(1006): got %v; want an error", codeErr)
	}
	fake := newFake()
	open := serve(t, &control.Server{Proxy: fake}, "")
	failing := serve(t, &control.Server{Proxy: fake, Reload: func() error {
		return errors.New("wschaos.toml:3: rule \"x\": after: is not a duration")
	}}, "")
	locked := serve(t, &control.Server{Proxy: fake, Token: "secret"}, "secret")
	wrongToken := *locked
	wrongToken.Token = "guess"
	noToken := *locked
	noToken.Token = ""
	// A server that is not the admin API.
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusBadGateway)
		w.Write([]byte("<h1>Bad Gateway</h1>\n<p>nginx</p>"))
	}))
	t.Cleanup(other.Close)
	otherURL, _ := url.Parse(other.URL)
	notAPI := &control.Client{Base: otherURL, HTTP: &http.Client{Timeout: 5 * time.Second}}

	for _, tt := range []struct {
		name       string
		call       func(context.Context) error
		wantStatus int
		wantMsg    string // the whole message; "..." at an end: anything may come there
	}{
		{"unknown session", func(ctx context.Context) error { return open.Close(ctx, 42, "1000", "") },
			404, "session 42: no such session"},
		{"unknown session reset", func(ctx context.Context) error { return open.Reset(ctx, 42) },
			404, "session 42: no such session"},
		{"unknown session get", func(ctx context.Context) error { _, err := open.Session(ctx, 42); return err },
			404, "session 42: no such session"},
		{"unsendable code", func(ctx context.Context) error { return open.Close(ctx, 3, "1006", "") },
			400, "code: " + codeErr.Error()},
		{"unsendable code for all", func(ctx context.Context) error { _, err := open.CloseMatching(ctx, "1006", "", nil); return err },
			400, "code: " + codeErr.Error()},
		{"unknown code name", func(ctx context.Context) error { return open.Close(ctx, 3, "restart", "") },
			400, `code: "restart" is not a close code name; ...`},
		{"reason too long", func(ctx context.Context) error { return open.Close(ctx, 3, "1000", strings.Repeat("x", 124)) },
			400, "reason: is 124 bytes; a close reason is at most 123 bytes of UTF-8 (a close frame carries 125 bytes, 2 of them the code)"},
		{"reason with none", func(ctx context.Context) error { return open.Close(ctx, 3, "none", "why") },
			400, `reason: cannot go with code = "none": an empty close frame has no room for a reason; remove it or pick a code`},
		{"bad match", func(ctx context.Context) error {
			_, err := open.CloseMatching(ctx, "1000", "", &rules.MatchSpec{Client: "not-an-address"})
			return err
		}, 400, `...match.client: "not-an-address" is not a CIDR or an IP address...`},
		{"unknown rule", func(ctx context.Context) error { return open.EnableRule(ctx, "nope", true) },
			404, `rule "nope": no such rule`},
		{"reload without a file", func(ctx context.Context) error { _, err := open.Reload(ctx); return err },
			501, "no configuration file to reload: the proxy was started without --config"},
		{"reload of an invalid file", func(ctx context.Context) error { _, err := failing.Reload(ctx); return err },
			422, `the running rules stay: wschaos.toml:3: rule "x": after: is not a duration`},
		{"wrong token", func(ctx context.Context) error { _, err := wrongToken.Sessions(ctx); return err },
			401, "missing or wrong token: send Authorization: Bearer <token>"},
		{"no token", func(ctx context.Context) error { return noToken.Reset(ctx, 3) },
			401, "missing or wrong token: send Authorization: Bearer <token>"},
		{"not the admin API", func(ctx context.Context) error { _, err := notAPI.Rules(ctx); return err },
			502, `not an answer of the wschaos admin API: 502 Bad Gateway, text/html: "<h1>Bad Gateway</h1>"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(testContext(t))
			var ae *control.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("got %T %v; want %v", err, err, "*control.APIError")
			}
			if ae.Status != tt.wantStatus {
				t.Errorf("status: got %v; want %v", ae.Status, tt.wantStatus)
			}
			if !likeMsg(ae.Msg, tt.wantMsg) {
				t.Errorf("message: got %q; want %q", ae.Msg, tt.wantMsg)
			}
			if want := fmt.Sprintf("%s (%d)", ae.Msg, tt.wantStatus); err.Error() != want {
				t.Errorf("Error(): got %q; want %q", err.Error(), want)
			}
		})
	}
	if inj := fake.takeInjected(); len(inj) != 0 {
		t.Errorf("injected: got %+v; want %v", inj, "none")
	}
	t.Run("right token", func(t *testing.T) {
		if _, err := locked.Sessions(testContext(t)); err != nil {
			t.Errorf("got %v; want %v", err, nil)
		}
	})
}

// likeMsg reports whether msg is want, where a "..." at either end of want
// stands for anything.
func likeMsg(msg, want string) bool {
	mid, anyStart := strings.CutPrefix(want, "...")
	mid, anyEnd := strings.CutSuffix(mid, "...")
	switch {
	case anyStart && anyEnd:
		return strings.Contains(msg, mid)
	case anyStart:
		return strings.HasSuffix(msg, mid)
	case anyEnd:
		return strings.HasPrefix(msg, mid)
	}
	return msg == want
}

func TestClientUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	c := &control.Client{Base: &url.URL{Scheme: "http", Host: addr}, HTTP: &http.Client{Timeout: 5 * time.Second}}
	for _, tt := range []struct {
		name string
		call func(context.Context) error
	}{
		{"sessions", func(ctx context.Context) error { _, err := c.Sessions(ctx); return err }},
		{"close", func(ctx context.Context) error { return c.Close(ctx, 1, "1000", "") }},
		{"follow", func(ctx context.Context) error {
			return c.FollowEvents(ctx, func(proxy.Event, json.RawMessage) error { return nil })
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(testContext(t))
			var ue *control.UnreachableError
			if !errors.As(err, &ue) {
				t.Fatalf("got %T %v; want %v", err, err, "*control.UnreachableError")
			}
			if want := "http://" + addr; ue.URL != want {
				t.Errorf("URL: got %v; want %v", ue.URL, want)
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("got %v; want it to wrap %v", err, syscall.ECONNREFUSED)
			}
			if want := "cannot reach the admin API at http://" + addr; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("got %q; want it to start with %q", err.Error(), want)
			}
		})
	}
}

func TestClientBasePath(t *testing.T) {
	fake := newFake()
	s := &control.Server{Proxy: fake}
	mux := http.NewServeMux()
	mux.Handle("/wschaos/", http.StripPrefix("/wschaos", s.Handler()))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	for _, base := range []string{srv.URL + "/wschaos", srv.URL + "/wschaos/"} {
		t.Run(base, func(t *testing.T) {
			u, err := url.Parse(base)
			if err != nil {
				t.Fatal(err)
			}
			c := &control.Client{Base: u, HTTP: &http.Client{Timeout: 5 * time.Second}}
			ss, err := c.Sessions(testContext(t))
			if err != nil {
				t.Fatalf("got %v; want %v", err, nil)
			}
			if len(ss) != len(fake.sessions) {
				t.Errorf("got %d sessions; want %d", len(ss), len(fake.sessions))
			}
			if err := c.EnableRule(testContext(t), "a/b c", true); err != nil {
				t.Errorf("enable: got %v; want %v", err, nil)
			}
		})
	}
}

func TestClientFollowEvents(t *testing.T) {
	events := control.NewEventLog(10)
	old := proxy.Event{Time: started, Kind: proxy.EventOpened, Session: 1, Client: "127.0.0.1:50000", Path: "/a"}
	events.Event(old)
	c := serve(t, &control.Server{Proxy: newFake(), Events: events}, "")

	type followed struct {
		e    proxy.Event
		data string
	}
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	got := make(chan followed, 10)
	done := make(chan error, 1)
	go func() {
		done <- c.FollowEvents(ctx, func(e proxy.Event, data json.RawMessage) error {
			got <- followed{e, string(data)}
			return nil
		})
	}()
	next := func() followed {
		t.Helper()
		select {
		case f := <-got:
			return f
		case err := <-done:
			t.Fatalf("FollowEvents returned %v; want it to go on", err)
		case <-time.After(5 * time.Second):
			t.Fatalf("no event within 5s")
		}
		return followed{}
	}

	// The kept event first; the stream is live once it has arrived.
	if f := next(); !reflect.DeepEqual(f.e, old) {
		t.Errorf("kept event: got %+v; want %+v", f.e, old)
	}
	live := proxy.Event{Time: started.Add(time.Second), Kind: proxy.EventFault, Session: 1, Client: "127.0.0.1:50000",
		Rule: "manual", Trigger: "manual", Action: "close", By: "manual", Code: 1012, Reason: "multi\nline"}
	events.Event(live)
	f := next()
	if !reflect.DeepEqual(f.e, live) {
		t.Errorf("live event: got %+v; want %+v", f.e, live)
	}
	if want, _ := json.Marshal(live); f.data != string(want) {
		t.Errorf("data: got %s; want %s", f.data, want)
	}

	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("got %v; want %v", err, context.Canceled)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("FollowEvents did not return within 5s of its context ending")
	}

	t.Run("callback error", func(t *testing.T) {
		stop := errors.New("enough")
		err := c.FollowEvents(testContext(t), func(proxy.Event, json.RawMessage) error { return stop })
		if !errors.Is(err, stop) {
			t.Errorf("got %v; want %v", err, stop)
		}
	})
	t.Run("server ends the stream", func(t *testing.T) {
		srv := httptest.NewServer((&control.Server{Proxy: newFake(), Events: events}).Handler())
		u, _ := url.Parse(srv.URL)
		c := &control.Client{Base: u}
		err := c.FollowEvents(testContext(t), func(proxy.Event, json.RawMessage) error {
			go srv.CloseClientConnections()
			return nil
		})
		srv.Close()
		var ue *control.UnreachableError
		if !errors.As(err, &ue) {
			t.Errorf("got %T %v; want %v", err, err, "*control.UnreachableError")
		}
	})
}
