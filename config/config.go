// Package config reads wschaos's TOML configuration file.
//
// Every key has a default (see config.example.toml at the repository's
// top); an unknown key, a value of the wrong type or an invalid value is an
// error that names the file, the line and the key, and says how to fix it.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/wschaos/wschaos/rules"
)

// Config is a whole configuration file.
type Config struct {
	Proxy Proxy        `toml:"proxy"`
	Admin Admin        `toml:"admin"`
	Log   Log          `toml:"log"`
	Rules []rules.Spec `toml:"rule"`

	// RuleSet is Rules, checked; Parse sets it.
	RuleSet *rules.Set `toml:"-"`
}

// Proxy is the [proxy] section.
type Proxy struct {
	// Listen is the address the proxy accepts clients on.
	Listen string `toml:"listen"`
	// Upstream is a ws:// or wss:// URL, or "echo" for the built-in echo
	// server.
	Upstream string `toml:"upstream"`
	// HandshakeTimeout bounds reading a client's request and the
	// upstream's dial and handshake.
	HandshakeTimeout Duration `toml:"handshake_timeout"`
	// IdleTimeout closes a session with no frames for this long; 0: never.
	IdleTimeout Duration `toml:"idle_timeout"`
	// MaxFrameSize ends a session whose peer sends a larger frame (1009);
	// 0: no limit.
	MaxFrameSize Size `toml:"max_frame_size"`
	// DrainTimeout is how long a graceful shutdown waits for close
	// handshakes.
	DrainTimeout Duration `toml:"drain_timeout"`
	// TLSCert and TLSKey make the listener speak TLS (wss://).
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// UpstreamCA is a PEM file of roots to verify a wss:// upstream with.
	UpstreamCA string `toml:"upstream_ca"`
	// UpstreamInsecureSkipVerify turns upstream certificate checks off.
	UpstreamInsecureSkipVerify bool `toml:"upstream_insecure_skip_verify"`
	// Seed seeds the rules' random decisions; nil: a random seed, logged.
	Seed *int64 `toml:"seed"`
	// MaxInspectSize is how much of a message on_message rules look at.
	MaxInspectSize Size `toml:"max_inspect_size"`
	// Loops is how many event loops serve plain sessions (Linux); 0:
	// every session on goroutines; AutoLoops, the default: one for each
	// CPU the process may use, which the program decides.
	Loops int `toml:"loops"`
}

// Admin is the [admin] section: the control plane's listener.
type Admin struct {
	// Listen is the admin API's address; empty turns it off.
	Listen string `toml:"listen"`
	// Token, if set, is the bearer token the API requires. The
	// WSCHAOS_ADMIN_TOKEN environment variable sets it too.
	Token string `toml:"token"`
	// AllowInsecure lets a non-loopback Listen run without a token.
	AllowInsecure bool `toml:"allow_insecure"`
	// Pprof serves Go's CPU and heap profiles under /debug/pprof/.
	Pprof bool `toml:"pprof"`
}

// Log is the [log] section.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `toml:"level"`
	// Format is console or json.
	Format string `toml:"format"`
}

// EchoUpstream is the Upstream value that selects the built-in echo server.
const EchoUpstream = "echo"

// Default returns the configuration an empty file gives.
func Default() Config {
	return Config{
		Proxy: Proxy{
			Listen:           "127.0.0.1:8080",
			Upstream:         EchoUpstream,
			HandshakeTimeout: Duration(10 * time.Second),
			DrainTimeout:     Duration(10 * time.Second),
			MaxInspectSize:   1 << 20,
			Loops:            AutoLoops,
		},
		Admin: Admin{Listen: "127.0.0.1:8081"},
		Log:   Log{Level: "info", Format: "console"},
	}
}

// AutoLoops is Proxy.Loops when the file does not say: a loop for each
// CPU the process may use.
const AutoLoops = -1

const loopsRange = "use 0 (no loops) up to 256, or leave it out for one loop per CPU"

// Error is one problem in a configuration file.
type Error struct {
	File string
	Line int    // 0 when unknown
	Rule string // for a problem in a [[rule]]: its name, or #N if it has none
	Key  string // dotted, such as proxy.listen; within a rule, the field
	Msg  string // what is wrong and how to fix it
}

func (e *Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Rule != "" {
		loc += ": rule " + e.Rule
	}
	if e.Key == "" {
		return loc + ": " + e.Msg
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Key, e.Msg)
}

// Errors is every problem found in a file, in the order of the file.
type Errors []*Error

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// Load reads and checks the file at path.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse reads and checks a configuration; name is the file's name for error
// messages. It returns every problem it finds as Errors.
func Parse(name string, data []byte) (Config, error) {
	cfg := Default()
	md, err := toml.NewDecoder(strings.NewReader(string(data))).Decode(&cfg)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return Config{}, Errors{{File: name, Line: errorLine(pe, data), Key: pe.LastKey, Msg: pe.Message + usage(pe)}}
		}
		return Config{}, Errors{typeError(name, err)}
	}
	pos := newPositions(data)
	var errs Errors
	add := func(key, format string, args ...any) {
		errs = append(errs, &Error{File: name, Line: pos.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	undecoded := md.Undecoded()
	unknown := make(map[string]bool, len(undecoded))
	for _, k := range undecoded {
		unknown[k.String()] = true
	}
	for _, k := range undecoded {
		if len(k) > 1 && unknown[k[:len(k)-1].String()] {
			continue // inside an unknown table, which is reported itself
		}
		e := &Error{File: name, Line: pos.line(strings.Join(k, ".")), Key: k.String(),
			Msg: "unknown key; the keys are listed in config.example.toml (check the spelling and the [section] it is under)"}
		if len(k) > 1 && k[0] == "rule" {
			// The decoder names a [[rule]]'s key without the rule's index.
			field := strings.Join(k[1:], ".")
			i := pos.element("rule", field)
			e.Key, e.Rule, e.Line = field, ruleLabel(cfg.Rules, i), pos.line(fmt.Sprintf("rule.%d.%s", i, field))
			e.Msg = "unknown key in a rule; the keys are name, match, on, after, after_messages, after_bytes, on_message, every, direction, probability, limit, action, code, reason, to, status, retry_after, body, duration, latency and jitter"
		}
		errs = append(errs, e)
	}
	if md.IsDefined("proxy", "loops") && cfg.Proxy.Loops == AutoLoops {
		add("proxy.loops", "%d is out of range; %s", cfg.Proxy.Loops, loopsRange) // AutoLoops is only the default
	}
	cfg.check(add)
	set, ferrs := rules.Compile(cfg.Rules, rules.Options{TLS: cfg.Proxy.TLSCert != ""})
	for _, fe := range ferrs {
		key := fmt.Sprintf("rule.%d", fe.Index)
		if fe.Field != "" {
			key += "." + fe.Field
		}
		errs = append(errs, &Error{File: name, Line: pos.line(key), Rule: ruleLabel(cfg.Rules, fe.Index), Key: fe.Field, Msg: fe.Msg})
	}
	if len(cfg.Rules) > 0 {
		cfg.RuleSet = set
	}
	if len(errs) > 0 {
		slices.SortStableFunc(errs, func(a, b *Error) int { return a.Line - b.Line })
		return Config{}, errs
	}
	return cfg, nil
}

// Check checks a configuration that did not come from a file as it is, such
// as one with command-line overrides; name stands for the file in errors.
func Check(name string, cfg *Config) error {
	var errs Errors
	cfg.check(func(key, format string, args ...any) {
		errs = append(errs, &Error{File: name, Key: key, Msg: fmt.Sprintf(format, args...)})
	})
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// decodeErrorRE matches the decoder's errors other than toml.ParseError,
// such as a value of the wrong type: "toml: line 3 (last key "a.b"): msg".
var decodeErrorRE = regexp.MustCompile(`(?s)^toml: (?:line (\d+) )?\(last key ("(?:[^"\\]|\\.)*")\): (.*)$`)

// typeError turns an error of the decoder that is not a toml.ParseError
// into an Error with the line and key it names.
func typeError(name string, err error) *Error {
	m := decodeErrorRE.FindStringSubmatch(err.Error())
	if m == nil {
		return &Error{File: name, Msg: err.Error()}
	}
	line, _ := strconv.Atoi(m[1])
	key, uerr := strconv.Unquote(m[2])
	if uerr != nil {
		return &Error{File: name, Msg: err.Error()}
	}
	return &Error{File: name, Line: line, Key: key, Msg: m[3]}
}

// errorLine is the line of pe's byte offset: the decoder counts a newline
// it stopped at as the start of the next line.
func errorLine(pe toml.ParseError, data []byte) int {
	if s := pe.Position.Start; s > 0 && s <= len(data) {
		return 1 + bytes.Count(data[:s], []byte("\n"))
	}
	return pe.Position.Line
}

func usage(pe toml.ParseError) string {
	if pe.Usage == "" {
		return ""
	}
	return "; " + strings.TrimSpace(pe.Usage)
}

func (c *Config) check(add func(key, format string, args ...any)) {
	p := &c.Proxy
	if _, _, err := net.SplitHostPort(p.Listen); err != nil {
		add("proxy.listen", "%q is not host:port; write for example \"127.0.0.1:8080\" or \":8080\"", p.Listen)
	}
	if p.Upstream != EchoUpstream {
		u, err := url.Parse(p.Upstream)
		switch {
		case err != nil:
			add("proxy.upstream", "%q is not a URL: %v; write \"ws://host:port/path\", \"wss://...\" or \"echo\"", p.Upstream, err)
		case u.Scheme != "ws" && u.Scheme != "wss":
			add("proxy.upstream", "%q must start with ws:// or wss://, or be \"echo\" for the built-in echo server", p.Upstream)
		case u.Host == "":
			add("proxy.upstream", "%q has no host; write \"ws://host:port/path\"", p.Upstream)
		}
	}
	if p.HandshakeTimeout <= 0 {
		add("proxy.handshake_timeout", "must be more than 0, such as \"10s\"")
	}
	if p.IdleTimeout < 0 {
		add("proxy.idle_timeout", "must not be negative; 0 turns it off")
	}
	if p.DrainTimeout < 0 {
		add("proxy.drain_timeout", "must not be negative; 0 closes sessions at once on shutdown")
	}
	if p.MaxFrameSize < 0 {
		add("proxy.max_frame_size", "must not be negative; 0 means no limit")
	}
	if p.Seed != nil && *p.Seed < 0 {
		// The seed is logged and shown as an unsigned number, which must
		// be writable back here.
		add("proxy.seed", "%d is negative; use a whole number from 0 to 9223372036854775807", *p.Seed)
	}
	if p.Loops < AutoLoops || p.Loops > 256 {
		add("proxy.loops", "%d is out of range; %s", p.Loops, loopsRange)
	}
	if p.MaxInspectSize <= 0 {
		add("proxy.max_inspect_size", "must be more than 0, such as \"1MiB\"")
	}
	// The key that is set is the one reported, so that its line is found.
	switch {
	case p.TLSCert != "" && p.TLSKey == "":
		add("proxy.tls_cert", "tls_cert and tls_key go together: set both to serve wss://, or neither")
	case p.TLSCert == "" && p.TLSKey != "":
		add("proxy.tls_key", "tls_cert and tls_key go together: set both to serve wss://, or neither")
	}
	if a := c.Admin.Listen; a != "" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			add("admin.listen", "%q is not host:port; write for example \"127.0.0.1:8081\", or \"\" to turn the admin API off", a)
		} else if a == p.Listen && !strings.HasSuffix(a, ":0") {
			add("admin.listen", "is the proxy's own address; the admin API is never served on the proxy's port: pick another, such as \"127.0.0.1:8081\"")
		}
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Log.Level) {
		add("log.level", "%q is not a level; write \"debug\", \"info\", \"warn\" or \"error\"", c.Log.Level)
	}
	if c.Log.Format != "console" && c.Log.Format != "json" {
		add("log.format", "%q is not a format; write \"console\" or \"json\"", c.Log.Format)
	}
}

// ruleLabel names the i-th rule in an error: its name quoted, or #N.
func ruleLabel(specs []rules.Spec, i int) string {
	if i >= 0 && i < len(specs) && specs[i].Name != "" {
		return strconv.Quote(specs[i].Name)
	}
	return fmt.Sprintf("#%d", i+1)
}
