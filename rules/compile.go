package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"
	"time"
)

// FieldError is one problem in one rule. Field is the key as written, such
// as "code" or "match.client"; empty for the rule as a whole.
type FieldError struct {
	Index int    // the rule's place in the file, from 0
	Rule  string // its name, if it has one
	Field string
	Msg   string // what is wrong and how to fix it
}

func (e *FieldError) Error() string {
	who := fmt.Sprintf("rule #%d", e.Index+1)
	if e.Rule != "" {
		who = fmt.Sprintf("rule %q", e.Rule)
	}
	if e.Field == "" {
		return who + ": " + e.Msg
	}
	return fmt.Sprintf("%s: %s: %s", who, e.Field, e.Msg)
}

// Options are the facts outside the rules that decide whether they are
// valid.
type Options struct {
	// TLS reports whether the proxy's listener speaks TLS; tls_fail needs it.
	TLS bool
}

// Set is a checked list of rules, in the order of the file.
type Set struct {
	Rules []*Rule
}

// Lookup returns the rule called name.
func (s *Set) Lookup(name string) (*Rule, bool) {
	if s == nil {
		return nil, false
	}
	for _, r := range s.Rules {
		if r.Name == name {
			return r, true
		}
	}
	return nil, false
}

// Compile checks every spec and returns the set, or every problem found.
func Compile(specs []Spec, opts Options) (*Set, []*FieldError) {
	set := &Set{}
	var errs []*FieldError
	seen := map[string]int{}
	for i := range specs {
		r, es := compileOne(i, &specs[i], opts)
		if name := specs[i].Name; name != "" {
			if first, dup := seen[name]; dup {
				es = append(es, &FieldError{Index: i, Rule: name, Field: "name",
					Msg: fmt.Sprintf("rule #%d already has this name; every rule needs its own name", first+1)})
			} else {
				seen[name] = i
			}
		}
		errs = append(errs, es...)
		if len(es) == 0 {
			set.Rules = append(set.Rules, r)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return set, nil
}

// triggerKeys are the keys that each name a trigger.
var triggerKeys = []string{"on", "after", "after_messages", "after_bytes", "on_message", "every"}

func compileOne(i int, sp *Spec, opts Options) (*Rule, []*FieldError) {
	var errs []*FieldError
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Index: i, Rule: sp.Name, Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	r := &Rule{Name: sp.Name, Index: i, Probability: 1, Direction: FromBoth, spec: *sp}
	r.Action.RetryAfter = -1

	switch strings.TrimSpace(sp.Name) {
	case "":
		bad("name", `is required; add name = "..." so that logs and the admin API can name the rule`)
	case "manual":
		bad("name", `"manual" names faults fired by hand in events and metrics; pick another name`)
	case ".", "..":
		bad("name", "%q cannot be a path segment of the admin API (/api/rules/{name}/enable); pick another name", sp.Name)
	}
	compileMatch(&sp.Match, &r.Match, bad)

	// The trigger.
	given := map[string]bool{
		"on": sp.On != "", "after": sp.After != "", "after_messages": sp.AfterMessages != nil,
		"after_bytes": sp.AfterBytes != nil, "on_message": sp.OnMessage != nil, "every": sp.Every != "",
	}
	var set []string
	for _, k := range triggerKeys {
		if given[k] {
			set = append(set, k)
		}
	}
	switch len(set) {
	case 0:
		bad("", `has no trigger; add exactly one of on = "connect", after = "30s", after_messages = 10, after_bytes = "1MiB", on_message = "regex" or every = "60s"`)
	case 1:
	default:
		bad(set[1], "is a second trigger besides %s; a rule has exactly one trigger: split it into two rules", set[0])
	}
	usesDirection := false
	switch {
	case given["on"]:
		r.Trigger = OnConnect
		if sp.On != "connect" {
			bad("on", `%q is not a trigger; the only value is "connect" (use after, after_messages, ... for the others)`, sp.On)
		}
	case given["after"]:
		r.Trigger = After
		lo, hi, err := parseRange(sp.After)
		if err != nil {
			bad("after", "%v", err)
		}
		r.After, r.AfterMax = lo, hi
	case given["after_messages"]:
		r.Trigger, usesDirection = AfterMessages, true
		r.Count = *sp.AfterMessages
		if r.Count < 1 {
			bad("after_messages", "must be at least 1 (the action follows the N-th message); use on = \"connect\" to act at once")
		}
	case given["after_bytes"]:
		r.Trigger, usesDirection = AfterBytes, true
		n, err := ParseSize(sp.AfterBytes)
		switch {
		case err != nil:
			bad("after_bytes", "%v", err)
		case n < 1:
			bad("after_bytes", "must be at least 1 byte")
		}
		r.Count = n
	case given["on_message"]:
		r.Trigger, usesDirection = OnMessage, true
		re, err := regexp.Compile(*sp.OnMessage)
		if err != nil {
			bad("on_message", "%q is not a valid regular expression (Go RE2 syntax): %v", *sp.OnMessage, unwrapRE(err))
		}
		r.Pattern = re
	case given["every"]:
		r.Trigger = Every
		d, err := parseDuration(sp.Every)
		switch {
		case err != nil:
			bad("every", "%v", err)
		case d <= 0:
			bad("every", "must be more than 0, such as \"60s\"")
		}
		r.Every = d
	}

	if sp.Probability != nil {
		r.Probability = *sp.Probability
		if !(r.Probability >= 0 && r.Probability <= 1) {
			bad("probability", "%v is outside [0, 1]; write for example 0.5 for half of the sessions", *sp.Probability)
		}
	}
	if sp.Limit != nil {
		r.Limit = *sp.Limit
		if r.Limit < 1 {
			bad("limit", "must be at least 1; remove the key for no limit")
		}
	}

	// The action.
	a := &r.Action
	allowed := map[string]bool{}
	switch sp.Action {
	case "close":
		a.Kind = Close
		allowed["code"], allowed["reason"], allowed["to"] = true, true, true
		codeOK := false
		if sp.Code == nil {
			bad("code", `is required with action = "close"; write a code such as 1012, a name such as "service_restart", or "none" for an empty close frame`)
		} else if c, err := ParseCode(sp.Code); err != nil {
			bad("code", "%v", err)
		} else {
			a.Code, codeOK = c, true
		}
		if sp.Reason != nil {
			a.Reason = *sp.Reason
			if err := CheckReason(a.Reason, codeOK && a.Code == CodeNone); err != nil {
				bad("reason", "%v", err)
			}
		}
	case "reset", "drop":
		a.Kind = Reset
		if sp.Action == "drop" {
			a.Kind = Drop
		}
		allowed["to"] = true
	case "reject":
		a.Kind = Reject
		allowed["status"], allowed["retry_after"], allowed["body"] = true, true, true
		a.Status = 503
		if sp.Status != nil {
			a.Status = int(*sp.Status)
			if a.Status < 400 || a.Status > 599 {
				bad("status", "%d is not an error status; write one from 400 to 599, such as 503", *sp.Status)
			}
		}
		if sp.RetryAfter != nil {
			a.RetryAfter = int(*sp.RetryAfter)
			if a.RetryAfter < 0 {
				bad("retry_after", "must be a number of seconds, 0 or more")
			}
		}
		if sp.Body != nil {
			a.Body = *sp.Body
		}
		if r.Trigger != 0 && r.Trigger != OnConnect {
			bad("action", `"reject" refuses the upgrade, so it needs on = "connect"; to end an open session use "close", "reset" or "drop"`)
		}
	case "hang":
		a.Kind, usesDirection = Hang, true
		allowed["duration"] = true
		if sp.Duration != "" {
			d, err := parseDuration(sp.Duration)
			switch {
			case err != nil:
				bad("duration", "%v", err)
			case d <= 0:
				bad("duration", "must be more than 0; remove it to hang until the peers give up")
			}
			a.Duration = d
		}
	case "delay":
		a.Kind, usesDirection = Delay, true
		allowed["latency"], allowed["jitter"] = true, true
		if sp.Latency == "" {
			bad("latency", `is required with action = "delay"; write for example latency = "200ms"`)
		} else if d, err := parseDuration(sp.Latency); err != nil {
			bad("latency", "%v", err)
		} else if d <= 0 {
			bad("latency", "must be more than 0")
		} else {
			a.Latency = d
		}
		if sp.Jitter != "" {
			d, err := parseDuration(sp.Jitter)
			switch {
			case err != nil:
				bad("jitter", "%v", err)
			case d < 0:
				bad("jitter", "must not be negative")
			}
			a.Jitter = d
		}
	case "tls_fail":
		a.Kind = TLSFail
		if !opts.TLS {
			bad("action", `"tls_fail" needs a TLS listener: set [proxy] tls_cert and tls_key`)
		}
		if r.Trigger != 0 && r.Trigger != OnConnect {
			bad("action", `"tls_fail" happens during the TLS handshake, so it needs on = "connect"`)
		}
		if !r.Match.OnlyClient() {
			bad("match", `"tls_fail" happens before any HTTP is read, so it can match only on client`)
		}
	case "":
		bad("action", `is required; write one of "close", "reset", "drop", "reject", "hang", "delay" or "tls_fail"`)
	default:
		bad("action", `%q is not an action; write one of "close", "reset", "drop", "reject", "hang", "delay" or "tls_fail"`, sp.Action)
	}
	if a.Kind != 0 {
		present := map[string]bool{
			"code": sp.Code != nil, "reason": sp.Reason != nil, "to": sp.To != "",
			"status": sp.Status != nil, "retry_after": sp.RetryAfter != nil, "body": sp.Body != nil,
			"duration": sp.Duration != "", "latency": sp.Latency != "", "jitter": sp.Jitter != "",
		}
		for _, k := range []string{"code", "reason", "to", "status", "retry_after", "body", "duration", "latency", "jitter"} {
			if present[k] && !allowed[k] {
				bad(k, "does not apply to action = %q; remove it", sp.Action)
			}
		}
	}

	a.To = ToClient
	switch sp.To {
	case "", "client":
	case "upstream":
		a.To = ToUpstream
	case "both":
		a.To = ToBoth
	default:
		bad("to", `%q is not a side; write "client", "upstream" or "both"`, sp.To)
	}
	switch sp.Direction {
	case "", "both":
	case "client":
		r.Direction = FromClient
	case "upstream":
		r.Direction = FromUpstream
	default:
		bad("direction", `%q is not a direction; write "client" (client to upstream), "upstream" (upstream to client) or "both"`, sp.Direction)
	}
	if sp.Direction != "" && !usesDirection {
		bad("direction", "has no effect here: it goes with after_messages, after_bytes, on_message, or action = \"hang\" or \"delay\"; remove it")
	}
	return r, errs
}

func compileMatch(m *MatchSpec, out *Match, bad func(field, format string, args ...any)) {
	glob := func(field, s string) *Glob {
		g, err := ParseGlob(s)
		if err != nil {
			bad(field, "%v", err)
		}
		return g
	}
	if m.Path != "" {
		out.Path = glob("match.path", m.Path)
	}
	if m.Subprotocol != "" {
		out.Subprotocol = glob("match.subprotocol", m.Subprotocol)
	}
	for _, k := range sortedKeys(m.Query) {
		if out.Query == nil {
			out.Query = map[string]*Glob{}
		}
		out.Query[k] = glob("match.query."+k, m.Query[k])
	}
	for _, k := range sortedKeys(m.Header) {
		if out.Header == nil {
			out.Header = map[string]*Glob{}
		}
		out.Header[strings.ToLower(k)] = glob("match.header."+k, m.Header[k])
	}
	if m.Client != "" {
		p, err := parsePrefix(m.Client)
		if err != nil {
			bad("match.client", "%q is not a CIDR or an IP address; write for example \"10.0.0.0/8\", \"127.0.0.1\" or \"::1/128\"", m.Client)
		} else {
			out.Client = &p
		}
	}
}

func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, err
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		// Clients are matched unmapped, so ::ffff:a.b.c.d/n stands for
		// the IPv4 prefix a.b.c.d/(n-96).
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

func unwrapRE(err error) string {
	var e *syntax.Error
	if errors.As(err, &e) {
		return string(e.Code) + ": " + e.Expr
	}
	return err.Error()
}

// parseDuration reads a Go duration.
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration; write a Go duration such as \"30s\" or \"500ms\"", s)
	}
	return d, nil
}

// parseRange reads "30s" or "10s..30s".
func parseRange(s string) (lo, hi time.Duration, err error) {
	a, b, isRange := strings.Cut(s, "..")
	if isRange && (strings.HasPrefix(b, ".") || strings.HasSuffix(a, ".")) {
		// "0s...5s" would read as 0s..500ms (".5s" is a Go duration).
		return 0, 0, fmt.Errorf("%q is not a duration or a range; write \"30s\" or \"10s..30s\"", s)
	}
	if lo, err = parseDuration(a); err != nil {
		return 0, 0, fmt.Errorf("%q is not a duration or a range; write \"30s\" or \"10s..30s\"", s)
	}
	hi = lo
	if isRange {
		if hi, err = parseDuration(b); err != nil {
			return 0, 0, fmt.Errorf("%q is not a duration or a range; write \"30s\" or \"10s..30s\"", s)
		}
	}
	switch {
	case lo < 0 || hi < 0:
		return 0, 0, fmt.Errorf("%q is negative; a session's time starts at 0", s)
	case hi < lo:
		return 0, 0, fmt.Errorf("%q ends before it starts; write the smaller duration first", s)
	}
	return lo, hi, nil
}

// ParseSize reads a size as TOML gives it: a whole number of bytes, or a
// string such as "16MiB", "1MB" or "512KiB".
func ParseSize(v any) (int64, error) {
	switch x := v.(type) {
	case int64:
		if x < 0 {
			return 0, fmt.Errorf("%d is negative; a size is 0 or more bytes", x)
		}
		return x, nil
	case int:
		return ParseSize(int64(x))
	case string:
		t := strings.TrimSpace(x)
		mult := int64(1)
		for _, u := range sizeUnits {
			if strings.HasSuffix(t, u.suffix) {
				t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
				break
			}
		}
		n, err := strconv.ParseInt(t, 10, 64)
		if err != nil || n < 0 || n > (1<<62)/mult {
			return 0, fmt.Errorf("%q is not a size; write a whole number of bytes or a string such as \"16MiB\" or \"1MB\"", x)
		}
		return n * mult, nil
	default:
		return 0, fmt.Errorf("a size is a number of bytes or a string such as \"1MiB\", not %T", v)
	}
}

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
	{"B", 1},
}

// CompileMatch checks a match table given on its own, as the admin API
// takes one to pick sessions; the error lists every problem.
func CompileMatch(m MatchSpec) (*Match, error) {
	var out Match
	var msgs []string
	compileMatch(&m, &out, func(field, format string, args ...any) {
		msgs = append(msgs, field+": "+fmt.Sprintf(format, args...))
	})
	if len(msgs) > 0 {
		return nil, errors.New(strings.Join(msgs, "; "))
	}
	return &out, nil
}
