package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wschaos/wschaos/control"
	"github.com/wschaos/wschaos/proxy"
	"github.com/wschaos/wschaos/rules"
)

// The commands that drive a running proxy through its admin API.

// defaultAdmin is the admin API's URL when neither --admin nor
// WSCHAOS_ADMIN says otherwise: the default [admin] listen.
const defaultAdmin = "http://127.0.0.1:8081"

// requestTimeout bounds each command's request but the event stream.
const requestTimeout = 30 * time.Second

// defaultCloseCode is what close sends without --code: 1001 Going Away,
// what a server going down sends.
const defaultCloseCode = "1001"

// adminCommand runs a command that drives a running proxy through its
// admin API: sessions, close, reset, drop, hang, rules, enable, disable,
// reload or events.
func adminCommand(ctx context.Context, cmd string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	adminURL := fs.String("admin", "", "")
	token := fs.String("token", "", "")
	var (
		jsonOut, follow, all bool
		code, reason         string
		match                matchFlag
	)
	switch cmd {
	case "sessions":
		fs.BoolVar(&jsonOut, "json", false, "")
	case "events":
		fs.BoolVar(&jsonOut, "json", false, "")
		fs.BoolVar(&follow, "follow", false, "")
	case "close":
		fs.StringVar(&code, "code", defaultCloseCode, "")
		fs.StringVar(&reason, "reason", "", "")
		fs.BoolVar(&all, "all", false, "")
		fs.Var(&match, "match", "")
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return nil
		}
		return &usageError{cmd + ": " + err.Error()}
	}

	switch cmd {
	case "sessions", "rules", "reload", "events":
		if len(pos) > 0 {
			return &usageError{fmt.Sprintf("%s: unexpected argument %q", cmd, pos[0])}
		}
	case "close":
		switch {
		case all && len(pos) > 0:
			return &usageError{"close: give a session id or --all, not both"}
		case !all && len(pos) != 1:
			return &usageError{"close: give one session id, or --all"}
		case !all && match.set:
			return &usageError{"close: --match picks sessions for close --all; with a session id there is nothing to pick"}
		}
	default: // one session id or rule name
		what := "session id"
		if cmd == "enable" || cmd == "disable" {
			what = "rule name"
		}
		if len(pos) != 1 {
			return &usageError{fmt.Sprintf("%s takes one argument: the %s", cmd, what)}
		}
	}
	var id uint64
	if len(pos) == 1 && cmd != "enable" && cmd != "disable" {
		if id, err = strconv.ParseUint(pos[0], 10, 64); err != nil {
			return &usageError{fmt.Sprintf("%s: %q is not a session id; see wschaos sessions", cmd, pos[0])}
		}
	}

	a, err := newAdmin(*adminURL, *token)
	if err != nil {
		return err
	}
	defer a.c.HTTP.CloseIdleConnections()
	if !(cmd == "events" && follow) {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, requestTimeout)
		defer cancel()
	}

	switch cmd {
	case "sessions":
		err = a.sessions(ctx, stdout, jsonOut)
	case "close":
		if all {
			var spec *rules.MatchSpec
			if match.set {
				spec = &match.spec
			}
			var n int
			if n, err = a.c.CloseMatching(ctx, code, reason, spec); err == nil {
				fmt.Fprintf(stdout, "closed %d %s with %s\n", n, plural(n, "session", "sessions"), codeText(code))
			}
		} else if err = a.c.Close(ctx, id, code, reason); err == nil {
			fmt.Fprintf(stdout, "closed session %d with %s\n", id, codeText(code))
		}
	case "reset":
		if err = a.c.Reset(ctx, id); err == nil {
			fmt.Fprintf(stdout, "reset session %d\n", id)
		}
	case "drop":
		if err = a.c.Drop(ctx, id); err == nil {
			fmt.Fprintf(stdout, "dropped session %d\n", id)
		}
	case "hang":
		if err = a.c.Hang(ctx, id); err == nil {
			fmt.Fprintf(stdout, "hung session %d\n", id)
		}
	case "rules":
		err = a.rules(ctx, stdout)
	case "enable", "disable":
		if err = a.c.EnableRule(ctx, pos[0], cmd == "enable"); err == nil {
			fmt.Fprintf(stdout, "%sd rule %s\n", cmd, pos[0])
		}
	case "reload":
		var n int
		if n, err = a.c.Reload(ctx); err == nil {
			fmt.Fprintf(stdout, "reloaded: %d %s\n", n, plural(n, "rule", "rules"))
		}
	case "events":
		err = a.events(ctx, stdout, jsonOut, follow)
	}
	return a.explain(ctx, err)
}

// parseInterleaved parses fs's flags wherever they are among args and
// returns the other arguments, in order. After "--" every argument is
// positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// matchFlag collects --match KEY=GLOB into a match table.
type matchFlag struct {
	spec rules.MatchSpec
	set  bool
}

func (m *matchFlag) String() string { return "" }

func (m *matchFlag) Set(s string) error {
	key, glob, ok := strings.Cut(s, "=")
	if !ok {
		return errors.New("write KEY=GLOB, such as path=/chat/* or header.X-Tenant=acme")
	}
	set := func(dst *string) error {
		if *dst != "" {
			return fmt.Errorf("%s is given twice; every --match must hold, so give each key once", key)
		}
		*dst = glob
		return nil
	}
	setIn := func(m *map[string]string, name string) error {
		if name == "" {
			return fmt.Errorf("%q names no parameter; write %sNAME=GLOB", key, key)
		}
		if *m == nil {
			*m = map[string]string{}
		}
		if _, dup := (*m)[name]; dup {
			return fmt.Errorf("%s is given twice; every --match must hold, so give each key once", key)
		}
		(*m)[name] = glob
		return nil
	}
	var err error
	switch {
	case key == "path":
		err = set(&m.spec.Path)
	case key == "subprotocol":
		err = set(&m.spec.Subprotocol)
	case key == "client":
		err = set(&m.spec.Client)
	case strings.HasPrefix(key, "query."):
		err = setIn(&m.spec.Query, strings.TrimPrefix(key, "query."))
	case strings.HasPrefix(key, "header."):
		err = setIn(&m.spec.Header, strings.TrimPrefix(key, "header."))
	default:
		err = fmt.Errorf("%q is not a key; use path, query.NAME, header.NAME, subprotocol or client", key)
	}
	m.set = m.set || err == nil
	return err
}

// codeText says what a close code sends, for the command's report.
func codeText(code string) string {
	n, err := rules.ParseCode(code)
	switch {
	case err != nil:
		return code
	case n == rules.CodeNone:
		return "an empty close frame"
	}
	return strconv.Itoa(n)
}

// admin is the admin API a command talks to and where its URL came from.
type admin struct {
	c    *control.Client
	from string // --admin, WSCHAOS_ADMIN or the default
}

// newAdmin returns the client of the admin API named by the flags, the
// environment or the default.
func newAdmin(flagURL, flagToken string) (*admin, error) {
	raw, from := flagURL, "--admin"
	if raw == "" {
		raw, from = os.Getenv("WSCHAOS_ADMIN"), "WSCHAOS_ADMIN"
	}
	if raw == "" {
		raw, from = defaultAdmin, "the default"
	}
	s := raw
	if !strings.Contains(s, "://") {
		s = "http://" + s // host:port
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, &usageError{fmt.Sprintf("%s: %q is not the admin API's URL; write for example %s", from, raw, defaultAdmin)}
	}
	token := flagToken
	if token == "" {
		token = os.Getenv("WSCHAOS_ADMIN_TOKEN")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = 5 * time.Second
	tr.ResponseHeaderTimeout = requestTimeout
	return &admin{c: &control.Client{Base: u, Token: token, HTTP: &http.Client{Transport: tr}}, from: from}, nil
}

// explain adds to err what the user can do about it.
func (a *admin) explain(ctx context.Context, err error) error {
	var ue *control.UnreachableError
	var ae *control.APIError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ue):
		return fmt.Errorf("%w\nis wschaos running with its admin API there ([admin] listen, --admin-listen)? "+
			"Point to it with --admin URL or WSCHAOS_ADMIN (this URL came from %s)", err, a.from)
	case errors.As(err, &ae) && ae.Status == http.StatusUnauthorized:
		return fmt.Errorf("%w; give the proxy's token with --token TOKEN or WSCHAOS_ADMIN_TOKEN", err)
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
		return fmt.Errorf("the admin API at %s did not answer within %v", a.c.Base, requestTimeout)
	}
	return err
}

// printJSON gets path from the API and writes the answer as it came,
// indented.
func (a *admin) printJSON(ctx context.Context, w io.Writer, path string) error {
	var raw json.RawMessage
	if err := a.c.Do(ctx, http.MethodGet, path, nil, &raw); err != nil {
		return err
	}
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%s\n", bytes.TrimSpace(b.Bytes()))
	return err
}

// sessions prints the open sessions: a table, or the API's JSON.
func (a *admin) sessions(ctx context.Context, w io.Writer, jsonOut bool) error {
	if jsonOut {
		return a.printJSON(ctx, w, "/api/sessions")
	}
	ss, err := a.c.Sessions(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tCLIENT\tPATH\tSUBPROTOCOL\tAGE\tC->U MSGS\tU->C MSGS\tC->U BYTES\tU->C BYTES\tRULES")
	for _, s := range ss {
		path := s.Path
		if s.Query != "" {
			path += "?" + s.Query
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", s.ID, s.Client, path, orDash(s.Subprotocol),
			age(now.Sub(s.Started)), s.Client2Upstream.Messages, s.Upstream2Client.Messages,
			size(s.Client2Upstream.Bytes), size(s.Upstream2Client.Bytes), sessionRules(s.Rules, now))
	}
	return tw.Flush()
}

// sessionRules describes the rules that apply to a session: NAME, NAME*
// when its draw picked the session (with when an after rule fires),
// NAME! once it fired.
func sessionRules(rs []proxy.SessionRule, now time.Time) string {
	if len(rs) == 0 {
		return "-"
	}
	parts := make([]string, len(rs))
	for i, r := range rs {
		s := r.Name
		switch {
		case r.Fired:
			s += "!"
		case r.Hit:
			s += "*"
			if !r.FiresAt.IsZero() && r.FiresAt.After(now) {
				s += "(in " + age(r.FiresAt.Sub(now)) + ")"
			}
		}
		parts[i] = s
	}
	return strings.Join(parts, " ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// age writes a duration to the second, or to the millisecond below one.
func age(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// size writes a byte count exactly up to 10000, then with a binary unit.
func size(n uint64) string {
	if n < 10000 {
		return strconv.FormatUint(n, 10)
	}
	f, unit := float64(n)/1024, "KiB"
	for _, u := range []string{"MiB", "GiB", "TiB"} {
		if f < 1024 {
			break
		}
		f, unit = f/1024, u
	}
	return strconv.FormatFloat(f, 'f', 1, 64) + unit
}

// rules prints the loaded rules.
func (a *admin) rules(ctx context.Context, w io.Writer) error {
	rs, err := a.c.Rules(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tENABLED\tFIRED\tLIMIT\tSUMMARY")
	for _, r := range rs {
		enabled, limit := "yes", "-"
		if !r.Enabled {
			enabled = "no"
		}
		if r.Limit > 0 {
			limit = strconv.FormatInt(r.Limit, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", r.Name, enabled, r.Fired, limit, strings.TrimPrefix(r.Summary, r.Name+": "))
	}
	return tw.Flush()
}

// events prints the kept events, and with follow each new one until ctx
// is done.
func (a *admin) events(ctx context.Context, w io.Writer, jsonOut, follow bool) error {
	if follow {
		err := a.c.FollowEvents(ctx, func(e proxy.Event, data json.RawMessage) error {
			var err error
			if jsonOut {
				_, err = fmt.Fprintf(w, "%s\n", data)
			} else {
				_, err = fmt.Fprintln(w, eventLine(e))
			}
			return err
		})
		if ctx.Err() != nil {
			return nil // interrupted: the normal end of --follow
		}
		return err
	}
	if jsonOut {
		return a.printJSON(ctx, w, "/api/events")
	}
	es, err := a.c.Events(ctx)
	if err != nil {
		return err
	}
	for _, e := range es {
		fmt.Fprintln(w, eventLine(e))
	}
	return nil
}

// eventLine is an event on one line: time, kind, session, client, then
// what else it says as key=value.
func eventLine(e proxy.Event) string {
	var b strings.Builder
	session := "-"
	if e.Session != 0 {
		session = strconv.FormatUint(e.Session, 10)
	}
	fmt.Fprintf(&b, "%s %-7s %5s %s", e.Time.Local().Format("2006-01-02 15:04:05.000"), e.Kind, session, orDash(e.Client))
	kv := func(k, v string) {
		if v == "" {
			return
		}
		if strings.ContainsAny(v, " \t\"=") || strconv.Quote(v) != `"`+v+`"` {
			v = strconv.Quote(v)
		}
		b.WriteString(" " + k + "=" + v)
	}
	num := func(k string, n int) {
		if n != 0 {
			kv(k, strconv.Itoa(n))
		}
	}
	path := e.Path
	if e.Query != "" {
		path += "?" + e.Query
	}
	kv("path", path)
	kv("subprotocol", e.Subprotocol)
	kv("refusal", e.Refusal)
	num("status", e.Status)
	kv("rule", e.Rule)
	kv("trigger", e.Trigger)
	kv("action", e.Action)
	kv("by", e.By)
	kv("why", e.Why)
	num("code", e.Code)
	kv("reason", e.Reason)
	num("client_code", e.ClientCode)
	num("upstream_code", e.UpstreamCode)
	if e.Duration != 0 {
		k := "duration"
		switch e.Kind {
		case proxy.EventOpened:
			k = "handshake"
		case proxy.EventClosed:
			k = "lasted"
		}
		d := e.Duration.Round(time.Millisecond)
		if e.Duration < time.Millisecond {
			d = e.Duration.Round(time.Microsecond)
		}
		kv(k, d.String())
	}
	return b.String()
}
