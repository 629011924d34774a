// Package control is wschaos's admin listener: a JSON API to see open
// sessions and end them by hand, the rules' switches, the event stream,
// Prometheus metrics, health probes and a web page that uses all of them.
//
//	GET  /api/info                     version, proxy URL, upstream, seed
//	GET  /api/sessions                 open sessions
//	GET  /api/sessions/{id}
//	POST /api/sessions/{id}/close      {"code": 1012, "reason": "..."}
//	POST /api/sessions/{id}/reset|drop|hang
//	POST /api/close                    {"code": 1001, "reason": "...", "match": {...}}
//	GET  /api/rules
//	POST /api/rules/{name}/enable|disable
//	POST /api/reload
//	GET  /api/events[?follow=1]        the last events; follow: Server-Sent Events
//	GET  /metrics                      Prometheus text format
//	GET  /healthz, /readyz
//	GET  /                             the web page
//
// With a token, every request but the page's files and the probes needs
// "Authorization: Bearer <token>". State-changing endpoints take POST only
// and refuse cross-origin browser requests.
package control

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/pprof"
	"path"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/wschaos/wschaos/proxy"
	"github.com/wschaos/wschaos/rules"
)

// Proxy is what the admin API needs of a running proxy.
type Proxy interface {
	Sessions() []proxy.SessionInfo
	Session(id uint64) (proxy.SessionInfo, error)
	Inject(id uint64, m proxy.Manual) error
	InjectMatching(match *rules.Match, m proxy.Manual) int
	RuleInfos() []proxy.RuleInfo
	EnableRule(name string, on bool) error
}

// Server serves the admin API. Its fields are read by Handler.
type Server struct {
	// Proxy is the proxy the API acts on. It must be set.
	Proxy Proxy

	// Token, if not empty, is the bearer token every API request needs.
	Token string

	// Reload re-reads the configuration and applies its rules; it returns
	// the configuration's problems. Nil: POST /api/reload answers 501.
	Reload func() error

	// Ready reports whether the proxy is listening with its rules loaded.
	// Nil means ready.
	Ready func() bool

	// Events is the event log /api/events reads. Nil: no events.
	Events *EventLog

	// Metrics is served at /metrics. Nil: 404.
	Metrics *Metrics

	// Logger receives one line per state-changing request. Nil: none.
	Logger *zap.Logger

	// Pprof serves Go's profiles under /debug/pprof/, behind the token.
	Pprof bool

	// Info is served at /api/info: what the page shows about the proxy and
	// where its test client connects (proxy_url).
	Info Info
}

// Info describes the running proxy.
type Info struct {
	Version  string `json:"version"`
	ProxyURL string `json:"proxy_url"` // ws:// or wss://, as clients connect
	Upstream string `json:"upstream"`
	Seed     uint64 `json:"seed"`
	Token    bool   `json:"token"` // whether the API needs a token
}

// Handler returns the admin API's handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	api := func(pattern string, methods map[string]http.HandlerFunc) {
		mux.Handle(pattern, s.auth(allow(methods)))
	}
	api("/api/info", map[string]http.HandlerFunc{"GET": func(w http.ResponseWriter, r *http.Request) {
		info := s.Info
		info.Token = s.Token != ""
		writeJSON(w, http.StatusOK, info)
	}})
	api("/api/sessions", map[string]http.HandlerFunc{"GET": s.listSessions})
	api("/api/sessions/{id}", map[string]http.HandlerFunc{"GET": s.getSession})
	api("/api/sessions/{id}/{action}", map[string]http.HandlerFunc{"POST": s.sessionAction})
	api("/api/close", map[string]http.HandlerFunc{"POST": s.closeMatching})
	api("/api/rules", map[string]http.HandlerFunc{"GET": s.listRules})
	api("/api/rules/{name}/{switch}", map[string]http.HandlerFunc{"POST": s.switchRule})
	api("/api/reload", map[string]http.HandlerFunc{"POST": s.reload})
	api("/api/events", map[string]http.HandlerFunc{"GET": s.events})
	mux.Handle("/api/", s.auth(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
	})))
	if s.Metrics != nil {
		mux.Handle("/metrics", s.auth(allow(map[string]http.HandlerFunc{"GET": s.Metrics.Handler().ServeHTTP})))
	}
	mux.Handle("/healthz", allow(map[string]http.HandlerFunc{"GET": func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}}))
	mux.Handle("/readyz", allow(map[string]http.HandlerFunc{"GET": func(w http.ResponseWriter, r *http.Request) {
		if s.Ready != nil && !s.Ready() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}}))
	if s.Pprof {
		mux.Handle("/debug/pprof/", s.auth(http.HandlerFunc(pprof.Index)))
		mux.Handle("/debug/pprof/cmdline", s.auth(http.HandlerFunc(pprof.Cmdline)))
		mux.Handle("/debug/pprof/profile", s.auth(http.HandlerFunc(pprof.Profile)))
		mux.Handle("/debug/pprof/symbol", s.auth(http.HandlerFunc(pprof.Symbol)))
		mux.Handle("/debug/pprof/trace", s.auth(http.HandlerFunc(pprof.Trace)))
	}
	page, _ := fs.Sub(webFiles, "web")
	files := http.FileServerFS(page)
	mux.Handle("/", allow(map[string]http.HandlerFunc{"GET": func(w http.ResponseWriter, r *http.Request) {
		// Every path the page does not have is an unknown endpoint,
		// answered as the API answers one.
		name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
		if name == "" {
			name = "."
		}
		if _, err := fs.Stat(page, name); err != nil {
			writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
			return
		}
		files.ServeHTTP(w, r)
	}}))

	// Browsers send Sec-Fetch-Site and Origin; a state-changing request
	// from another origin is refused (403), so a page elsewhere cannot
	// drive the API with the user's token or network position.
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, "cross-origin request refused: the admin API takes state-changing requests only from its own origin")
	}))
	return securityHeaders(cop.Handler(mux))
}

func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self'; script-src 'self'")
		h.ServeHTTP(w, r)
	})
}

// allow dispatches on the method; any other gets 405 with Allow.
func allow(methods map[string]http.HandlerFunc) http.Handler {
	names := make([]string, 0, len(methods))
	for m := range methods {
		names = append(names, m)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		method := r.Method
		if method == http.MethodHead {
			method = http.MethodGet
		}
		h, ok := methods[method]
		if !ok {
			w.Header().Set("Allow", strings.Join(names, ", "))
			writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use "+strings.Join(names, " or "))
			return
		}
		h(w, r)
	})
}

// auth checks the bearer token, in constant time.
func (s *Server) auth(h http.Handler) http.Handler {
	if s.Token == "" {
		return h
	}
	want := []byte(s.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The scheme is case-insensitive (RFC 9110 section 11.1).
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(token)), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="wschaos"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong token: send Authorization: Bearer <token>")
			return
		}
		h.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func (s *Server) listSessions(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Proxy.Sessions())
}

func (s *Server) getSession(w http.ResponseWriter, r *http.Request) {
	id, ok := sessionID(w, r)
	if !ok {
		return
	}
	si, err := s.Proxy.Session(id)
	if err != nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("session %d: %v", id, err))
		return
	}
	writeJSON(w, http.StatusOK, si)
}

func sessionID(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("session %q: not a session id", r.PathValue("id")))
		return 0, false
	}
	return id, true
}

// closeRequest is the body of a close.
type closeRequest struct {
	Code   any              `json:"code"`
	Reason string           `json:"reason"`
	Match  *rules.MatchSpec `json:"match"`
}

// maxBody bounds a request body.
const maxBody = 64 << 10

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "bad JSON body: "+err.Error())
		return false
	}
	if err == nil {
		if _, err := dec.Token(); !errors.Is(err, io.EOF) {
			writeError(w, http.StatusBadRequest, "bad JSON body: more than one JSON value")
			return false
		}
	}
	return true
}

// manualClose checks a close request's code and reason with the same
// functions, and so the same messages, as the configuration's rules.
func manualClose(req *closeRequest) (proxy.Manual, error) {
	if req.Code == nil {
		return proxy.Manual{}, errors.New(`code: is required; write a code such as 1012, a name such as "service_restart", or "none" for an empty close frame`)
	}
	code, err := rules.ParseCode(req.Code)
	if err != nil {
		return proxy.Manual{}, fmt.Errorf("code: %w", err)
	}
	if err := rules.CheckReason(req.Reason, code == rules.CodeNone); err != nil {
		return proxy.Manual{}, fmt.Errorf("reason: %w", err)
	}
	return proxy.Manual{Action: rules.Close, Code: code, Reason: req.Reason}, nil
}

func (s *Server) sessionAction(w http.ResponseWriter, r *http.Request) {
	id, ok := sessionID(w, r)
	if !ok {
		return
	}
	var m proxy.Manual
	switch action := r.PathValue("action"); action {
	case "close":
		var req closeRequest
		if !decode(w, r, &req) {
			return
		}
		if req.Match != nil {
			writeError(w, http.StatusBadRequest, "match: picks sessions for POST /api/close; here the session is in the path")
			return
		}
		var err error
		if m, err = manualClose(&req); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	case "reset":
		m.Action = rules.Reset
	case "drop":
		m.Action = rules.Drop
	case "hang":
		m.Action = rules.Hang
	default:
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such action %q; use close, reset, drop or hang", action))
		return
	}
	if err := s.Proxy.Inject(id, m); err != nil {
		status := http.StatusNotFound
		if errors.Is(err, proxy.ErrEnding) {
			status = http.StatusConflict
		}
		writeError(w, status, fmt.Sprintf("session %d: %v", id, err))
		return
	}
	s.logf("manual fault", zap.Uint64("session", id), zap.Stringer("action", m.Action), zap.Int("code", m.Code))
	writeJSON(w, http.StatusOK, map[string]any{"session": id, "action": m.Action.String()})
}

func (s *Server) closeMatching(w http.ResponseWriter, r *http.Request) {
	var req closeRequest
	if !decode(w, r, &req) {
		return
	}
	m, err := manualClose(&req)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var match *rules.Match
	if req.Match != nil {
		if match, err = rules.CompileMatch(*req.Match); err != nil {
			writeError(w, http.StatusBadRequest, err.Error()) // its fields are named match.*
			return
		}
	}
	n := s.Proxy.InjectMatching(match, m)
	s.logf("manual close", zap.Int("sessions", n), zap.Int("code", m.Code))
	writeJSON(w, http.StatusOK, map[string]int{"closed": n})
}

func (s *Server) listRules(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Proxy.RuleInfos())
}

func (s *Server) switchRule(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var on bool
	switch r.PathValue("switch") {
	case "enable":
		on = true
	case "disable":
	default:
		writeError(w, http.StatusNotFound, "use /api/rules/{name}/enable or /disable")
		return
	}
	if err := s.Proxy.EnableRule(name, on); err != nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("rule %q: %v", name, err))
		return
	}
	s.logf("rule switched", zap.String("rule", name), zap.Bool("enabled", on))
	writeJSON(w, http.StatusOK, map[string]any{"rule": name, "enabled": on})
}

func (s *Server) reload(w http.ResponseWriter, r *http.Request) {
	if s.Reload == nil {
		writeError(w, http.StatusNotImplemented, "no configuration file to reload: the proxy was started without --config")
		return
	}
	if err := s.Reload(); err != nil {
		writeError(w, http.StatusUnprocessableEntity, "the running rules stay: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"reloaded": true, "rules": len(s.Proxy.RuleInfos())})
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	if s.Events == nil {
		writeJSON(w, http.StatusOK, []proxy.Event{})
		return
	}
	if f := r.URL.Query().Get("follow"); f == "" || f == "0" || f == "false" {
		writeJSON(w, http.StatusOK, s.Events.Last())
		return
	}
	s.follow(w, r)
}

// heartbeat keeps an idle event stream, and the proxies in between, awake.
const heartbeat = 15 * time.Second

// follow streams events as Server-Sent Events, starting with the kept
// ones, until the client goes away.
func (s *Server) follow(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		// net/http drops a HEAD response's body without an error: the
		// stream would never see its client go.
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	kept, live := s.Events.lastAndFollow(ctx)
	send := func(e proxy.Event) error {
		b, _ := json.Marshal(e)
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e.Kind, b); err != nil {
			return err
		}
		return rc.Flush()
	}
	for _, e := range kept {
		if send(e) != nil {
			return
		}
	}
	if rc.Flush() != nil {
		return
	}
	t := time.NewTicker(heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-live:
			if !ok || send(e) != nil {
				return
			}
		case <-t.C:
			if _, err := io.WriteString(w, ": heartbeat\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		}
	}
}

func (s *Server) logf(msg string, fields ...zap.Field) {
	if s.Logger != nil {
		s.Logger.Info(msg, fields...)
	}
}
