package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wschaos/wschaos/proxy"
	"github.com/wschaos/wschaos/rules"
)

// The admin commands, run through run against a proxy started by run.

// cliConfig is the proxy's configuration: one rule, which closes a /kick
// session with 4000 after the client's first message.
const cliConfig = `[proxy]
seed = 1

[[rule]]
name = "kick"
match = { path = "/kick" }
after_messages = 1
direction = "client"
action = "close"
code = 4000
reason = "kicked"
`

// cliProxy is a proxy started by startCLIProxy.
type cliProxy struct {
	r      *running
	config string   // its configuration file
	ws     *url.URL // where clients connect
	admin  string   // its admin API
}

// startCLIProxy writes config to a file and runs the proxy on it, with its
// admin API on a loopback port, and returns it once both listen.
func startCLIProxy(t *testing.T, config string) *cliProxy {
	t.Helper()
	file := filepath.Join(t.TempDir(), "wschaos.toml")
	if err := os.WriteFile(file, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	r, line := startRun(t, "run", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--log-format", "json", "--config", file)
	p := &cliProxy{r: r, config: file, ws: proxyURL(t, line)}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if l := logLine(r.stderr.String(), "admin listening"); l != nil {
			p.admin, _ = l["url"].(string)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no \"admin listening\" line within 5s; log:\n%s", r.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if u, err := url.Parse(p.admin); err != nil || u.Scheme != "http" || u.Hostname() != "127.0.0.1" {
		t.Fatalf("admin url: got %q; want http://127.0.0.1:PORT", p.admin)
	}
	return p
}

// cli runs an admin command against p's admin API.
func (p *cliProxy) cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	stdout, _, err := runFor(t, append(args, "--admin", p.admin)...)
	return stdout, err
}

// mustCLI runs an admin command that must succeed.
func (p *cliProxy) mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := p.cli(t, args...)
	if err != nil {
		t.Fatalf("%q: got %v; want %v", args, err, nil)
	}
	return out
}

// sessions returns the open sessions, from sessions --json.
func (p *cliProxy) sessions(t *testing.T) []proxy.SessionInfo {
	t.Helper()
	var ss []proxy.SessionInfo
	out := p.mustCLI(t, "sessions", "--json")
	if err := json.Unmarshal([]byte(out), &ss); err != nil {
		t.Fatalf("sessions --json: got %v parsing %q; want JSON", err, out)
	}
	return ss
}

// sessionID returns the id of the open session on path.
func (p *cliProxy) sessionID(t *testing.T, path string) string {
	t.Helper()
	for _, s := range p.sessions(t) {
		if s.Path == path {
			return strconv.FormatUint(s.ID, 10)
		}
	}
	t.Fatalf("no open session on %s", path)
	return ""
}

// eventually calls f until it reports true, for at most 5s, and fails
// with f's last answer.
func eventually(t *testing.T, what string, f func() (string, bool)) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, ok := f()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: got %q; want it within 5s", what, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readClose reads until the connection ends and returns how.
func readClose(t *testing.T, conn *websocket.Conn) error {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := conn.ReadMessage(); err != nil {
			return err
		}
	}
}

// wantCloseFrame checks that the client gets a close frame with code and
// reason.
func wantCloseFrame(t *testing.T, conn *websocket.Conn, code int, reason string) {
	t.Helper()
	err := readClose(t, conn)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("got %v; want close %v %q", err, code, reason)
	}
	if ce.Code != code || ce.Text != reason {
		t.Errorf("close: got %v %q; want %v %q", ce.Code, ce.Text, code, reason)
	}
}

// wantAbnormal checks that the connection ends without a close frame:
// 1006, or a reset.
func wantAbnormal(t *testing.T, conn *websocket.Conn, reset bool) {
	t.Helper()
	err := readClose(t, conn)
	var ce *websocket.CloseError
	switch {
	case errors.As(err, &ce) && ce.Code == websocket.CloseAbnormalClosure:
	case reset && errors.Is(err, syscall.ECONNRESET):
	default:
		t.Errorf("got %v; want close 1006 (or a reset after an RST)", err)
	}
}

// wantFailure checks that err is a failure (exit 1), not a usage error,
// whose message contains every one of want.
func wantFailure(t *testing.T, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got %v; want an error", err)
	}
	var ue *usageError
	if errors.As(err, &ue) {
		t.Errorf("got usage error %v; want another error", err)
	}
	if code := exitCode(err); code != 1 {
		t.Errorf("exit code: got %v; want %v", code, 1)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("got %q; want it to contain %q", err, w)
		}
	}
}

// cliEnv keeps the machine's environment out of the tests: the proxy's
// token comes from its file, the client's from --token or what a test
// sets.
func cliEnv(t *testing.T) {
	t.Setenv("WSCHAOS_ADMIN", "")
	t.Setenv("WSCHAOS_ADMIN_TOKEN", "")
}

func TestCLI(t *testing.T) {
	cliEnv(t)
	p := startCLIProxy(t, cliConfig)
	ws := p.ws.String()

	t.Run("sessions", func(t *testing.T) {
		conn := dial(t, ws+"/table?x=1")
		roundTrip(t, conn, "hello")
		kick := dial(t, ws+"/kick") // kick applies; no message, so it does not fire
		var out string
		eventually(t, "sessions", func() (string, bool) {
			out = p.mustCLI(t, "sessions")
			// Both messages counted (the echo may be read before its
			// count), and the rules attached (after the client's 101).
			counted, attached := false, false
			for _, l := range strings.Split(out, "\n") {
				f := strings.Fields(l)
				counted = counted || len(f) > 6 && f[2] == "/table?x=1" && f[5] == "1" && f[6] == "1"
				attached = attached || len(f) > 2 && f[2] == "/kick" && f[len(f)-1] == "kick*"
			}
			return out, counted && attached
		})
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		header := lines[0]
		wantHeader := []string{"ID", "CLIENT", "PATH", "SUBPROTOCOL", "AGE", "C->U MSGS", "U->C MSGS", "C->U BYTES", "U->C BYTES", "RULES"}
		if got := strings.Split(strings.Join(strings.Fields(header), " "), " "); strings.Join(got, " ") != strings.Join(wantHeader, " ") {
			t.Errorf("header: got %q; want the columns %q", header, wantHeader)
		}
		for _, tt := range []struct {
			path string
			want []string // the row's fields from PATH on, but AGE
		}{
			{"/table?x=1", []string{"/table?x=1", "-", "1", "1", "5", "5", "-"}},
			{"/kick", []string{"/kick", "-", "0", "0", "0", "0", "kick*"}},
		} {
			t.Run(tt.path, func(t *testing.T) {
				var row string
				for _, l := range lines[1:] {
					if f := strings.Fields(l); len(f) > 2 && f[2] == tt.path {
						row = l
					}
				}
				if row == "" {
					t.Fatalf("got %q; want a row for %s", out, tt.path)
				}
				f := strings.Fields(row)
				if got := append(f[2:4:4], f[5:]...); !reflect.DeepEqual(got, tt.want) {
					t.Errorf("row: got %q; want %q", got, tt.want)
				}
				// Aligned: each value starts under its column's title.
				if got, want := strings.Index(row, tt.path), strings.Index(header, "PATH"); got != want {
					t.Errorf("PATH column: got offset %v; want %v", got, want)
				}
				if got, want := strings.LastIndex(row, " ")+1, strings.Index(header, "RULES"); got != want {
					t.Errorf("RULES column: got offset %v; want %v", got, want)
				}
			})
		}
		conn.Close()
		kick.Close()
	})

	t.Run("sessions json", func(t *testing.T) {
		conn := dial(t, ws+"/json?y=2")
		roundTrip(t, conn, "abc")
		var s proxy.SessionInfo
		eventually(t, "sessions --json", func() (string, bool) {
			for _, s = range p.sessions(t) {
				if s.Path == "/json" {
					break
				}
			}
			return s.Path, s.Path == "/json" && s.Upstream2Client.Messages == 1
		})
		if s.Query != "y=2" || s.Client2Upstream.Messages != 1 || s.Client2Upstream.Bytes != 3 {
			t.Errorf("got %+v; want query y=2 and one 3-byte message from the client", s)
		}
		if out := p.mustCLI(t, "sessions", "--json"); !strings.HasPrefix(out, "[\n  {\n    \"id\": ") {
			t.Errorf("got %q; want indented JSON", out)
		}
		conn.Close()
	})

	t.Run("close", func(t *testing.T) {
		for i, tt := range []struct {
			name       string
			args       func(id string) []string
			wantOut    string // after "closed session ID "
			wantCode   int
			wantReason string
		}{
			{"flags after the id", func(id string) []string { return []string{"close", id, "--code", "1012", "--reason", "r"} },
				"with 1012", 1012, "r"},
			{"flags before the id", func(id string) []string {
				return []string{"close", "--code", "try_again_later", "--reason", "come back later", id}
			}, "with 1013", 1013, "come back later"},
			{"default code", func(id string) []string { return []string{"close", id} },
				"with 1001", 1001, ""},
			{"empty close frame", func(id string) []string { return []string{"close", "--code=none", id} },
				"with an empty close frame", websocket.CloseNoStatusReceived, ""},
		} {
			t.Run(tt.name, func(t *testing.T) {
				path := "/close-" + strconv.Itoa(i) // a closed session is listed until its close handshake ends
				conn := dial(t, ws+path)
				id := p.sessionID(t, path)
				out := p.mustCLI(t, tt.args(id)...)
				if want := "closed session " + id + " " + tt.wantOut + "\n"; out != want {
					t.Errorf("got %q; want %q", out, want)
				}
				wantCloseFrame(t, conn, tt.wantCode, tt.wantReason)
			})
		}
	})

	t.Run("reset drop hang", func(t *testing.T) {
		for _, tt := range []struct {
			cmd, wantOut string
			check        func(t *testing.T, conn *websocket.Conn)
		}{
			{"reset", "reset session", func(t *testing.T, conn *websocket.Conn) { wantAbnormal(t, conn, true) }},
			{"drop", "dropped session", func(t *testing.T, conn *websocket.Conn) { wantAbnormal(t, conn, false) }},
			{"hang", "hung session", func(t *testing.T, conn *websocket.Conn) {
				conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if err := conn.WriteMessage(websocket.TextMessage, []byte("anyone?")); err != nil {
					t.Fatalf("write: got %v; want %v", err, nil)
				}
				conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
				_, msg, err := conn.ReadMessage()
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Errorf("read: got %q, %v; want a timeout: nothing is relayed", msg, err)
				}
			}},
		} {
			t.Run(tt.cmd, func(t *testing.T) {
				path := "/" + tt.cmd
				conn := dial(t, ws+path)
				roundTrip(t, conn, "before")
				id := p.sessionID(t, path)
				if out, want := p.mustCLI(t, tt.cmd, id), tt.wantOut+" "+id+"\n"; out != want {
					t.Errorf("got %q; want %q", out, want)
				}
				tt.check(t, conn)
				conn.Close()
			})
		}
	})

	t.Run("close all", func(t *testing.T) {
		for _, tt := range []struct {
			name     string
			args     []string
			paths    []string // the sessions opened
			closed   []bool   // which of them the command closes
			wantOut  string
			wantCode int
		}{
			{"match path", []string{"close", "--all", "--match", "path=/a", "--code", "4001", "--reason", "a only"},
				[]string{"/a", "/a", "/b"}, []bool{true, true, false}, "closed 2 sessions with 4001\n", 4001},
			{"match path and query", []string{"close", "--match", "path=/q", "--match", "query.k=v", "--all"},
				[]string{"/q?k=v", "/q?k=w", "/q"}, []bool{true, false, false}, "closed 1 session with 1001\n", 1001},
			{"match nothing", []string{"close", "--all", "--match", "header.X-Tenant=acme", "--match", "subprotocol=p", "--match", "client=10.0.0.0/8"},
				[]string{"/n"}, []bool{false}, "closed 0 sessions with 1001\n", 0},
		} {
			t.Run(tt.name, func(t *testing.T) {
				conns := make([]*websocket.Conn, len(tt.paths))
				for i, path := range tt.paths {
					conns[i] = dial(t, ws+path)
				}
				if out := p.mustCLI(t, tt.args...); out != tt.wantOut {
					t.Errorf("got %q; want %q", out, tt.wantOut)
				}
				for i, conn := range conns {
					if tt.closed[i] {
						wantClose(t, conn, tt.wantCode)
					} else if got := roundTrip(t, conn, "still here"); got != "still here" {
						t.Errorf("%s: got %q; want %q", tt.paths[i], got, "still here")
					}
					conn.Close()
				}
			})
		}
	})

	t.Run("rules", func(t *testing.T) {
		t.Cleanup(func() {
			if t.Failed() { // how the sessions ended tells why no close came
				t.Logf("proxy log:\n%s", p.r.stderr)
			}
		})
		rulesRow := func(t *testing.T) []string {
			t.Helper()
			lines := strings.Split(strings.TrimSuffix(p.mustCLI(t, "rules"), "\n"), "\n")
			if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "NAME ENABLED FIRED LIMIT SUMMARY" {
				t.Fatalf("got %q; want a header and one rule", lines)
			}
			return strings.Fields(lines[1])
		}
		if got, want := rulesRow(t), []string{"kick", "yes", "0", "-", "after", "1", "messages", "from", "client", "->", "close", "4000"}; !reflect.DeepEqual(got[:len(want)], want) {
			t.Errorf("got %q; want it to start with %q", got, want)
		}

		if out, want := p.mustCLI(t, "disable", "kick"), "disabled rule kick\n"; out != want {
			t.Errorf("got %q; want %q", out, want)
		}
		if got := rulesRow(t)[1]; got != "no" {
			t.Errorf("ENABLED: got %v; want %v", got, "no")
		}
		spared := dial(t, ws+"/kick")
		if got := roundTrip(t, spared, "spared"); got != "spared" {
			t.Errorf("disabled: got %q; want %q", got, "spared")
		}

		if out, want := p.mustCLI(t, "enable", "kick"), "enabled rule kick\n"; out != want {
			t.Errorf("got %q; want %q", out, want)
		}
		if got := rulesRow(t)[1]; got != "yes" {
			t.Errorf("ENABLED: got %v; want %v", got, "yes")
		}
		kicked := dial(t, ws+"/kick")
		kicked.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if err := kicked.WriteMessage(websocket.TextMessage, []byte("kick me")); err != nil {
			t.Fatalf("write: got %v; want %v", err, nil)
		}
		wantCloseFrame(t, kicked, 4000, "kicked")
		eventually(t, "FIRED", func() (string, bool) {
			got := rulesRow(t)[2]
			return got, got == "1"
		})
		spared.Close()
	})

	t.Run("reload", func(t *testing.T) {
		if out, want := p.mustCLI(t, "reload"), "reloaded: 1 rule\n"; out != want {
			t.Errorf("got %q; want %q", out, want)
		}
		if err := os.WriteFile(p.config, []byte(cliConfig+"\n[[rule]]\nname = \"broken\"\nafter = \"soon\"\naction = \"close\"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := p.cli(t, "reload")
		wantFailure(t, err, "the running rules stay: ", p.config+":", "broken", "(422)")
		if err := os.WriteFile(p.config, []byte(cliConfig), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, want := p.mustCLI(t, "reload"), "reloaded: 1 rule\n"; out != want {
			t.Errorf("got %q; want %q", out, want)
		}
	})

	t.Run("events", func(t *testing.T) {
		eventually(t, "events", func() (string, bool) {
			out := p.mustCLI(t, "events")
			for _, want := range []string{" opened ", " closed ", " fault ", "rule=manual", "action=reset", "rule=kick", "reason=\"a only\"", "path=/kick"} {
				if !strings.Contains(out, want) {
					return out, false
				}
			}
			return out, true
		})
		var es []proxy.Event
		if out := p.mustCLI(t, "events", "--json"); json.Unmarshal([]byte(out), &es) != nil || len(es) == 0 {
			t.Errorf("events --json: got %q; want a JSON array of events", out)
		}
	})

	t.Run("events follow", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			args []string
			want string // in the new session's line
		}{
			{"text", []string{"events", "--follow"}, " opened "},
			{"json", []string{"events", "--follow", "--json"}, `"kind":"opened"`},
		} {
			t.Run(tt.name, func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				out := &syncBuffer{}
				done := make(chan error, 1)
				go func() { done <- run(ctx, append(tt.args, "--admin", p.admin), out, io.Discard) }()
				// The kept events come first; then the stream is live.
				eventually(t, "kept events", func() (string, bool) { return out.String(), strings.Contains(out.String(), tt.want) })
				path := "/follow-" + tt.name
				conn := dial(t, ws+path)
				eventually(t, "a new session's event", func() (string, bool) {
					for _, l := range strings.Split(out.String(), "\n") {
						if strings.Contains(l, tt.want) && strings.Contains(l, path) {
							return l, true
						}
					}
					return out.String(), false
				})
				conn.Close()
				cancel()
				select {
				case err := <-done:
					if err != nil {
						t.Errorf("got %v; want %v", err, nil)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("events --follow did not return within 5s of its context ending")
				}
				if tt.name == "json" {
					for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
						var e proxy.Event
						if err := json.Unmarshal([]byte(l), &e); err != nil || e.Kind == "" {
							t.Errorf("line %q: got %v; want an event's JSON", l, err)
						}
					}
				}
			})
		}
	})

	t.Run("errors", func(t *testing.T) {
		conn := dial(t, ws+"/errors")
		id := p.sessionID(t, "/errors")
		_, codeErr := rules.ParseCode(int64(1006))
		if codeErr == nil {
			t.Fatalf("ParseCode(1006): got %v; want an error", codeErr)
		}
		// The validator says the same of a rule with that code.
		bad := filepath.Join(t.TempDir(), "bad.toml")
		if err := os.WriteFile(bad, []byte("[[rule]]\nname = \"r\"\nafter = \"1s\"\naction = \"close\"\ncode = 1006\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, _, _ := runFor(t, "validate", bad); !strings.Contains(out, codeErr.Error()) {
			t.Errorf("validate: got %q; want it to contain %q", out, codeErr.Error())
		}
		for _, tt := range []struct {
			name string
			args []string
			want []string
		}{
			{"unknown session", []string{"close", "424242", "--code", "1000"}, []string{"session 424242: no such session (404)"}},
			{"unknown session reset", []string{"reset", "424242"}, []string{"session 424242: no such session (404)"}},
			{"unknown session hang", []string{"hang", "424242"}, []string{"session 424242: no such session (404)"}},
			{"unknown rule", []string{"disable", "nope"}, []string{`rule "nope": no such rule (404)`}},
			{"unsendable code", []string{"close", id, "--code", "1006"},
				[]string{"code: " + codeErr.Error() + " (400)", "1006 cannot be sent in a close frame"}},
			{"unsendable code for all", []string{"close", "--all", "--code", "1015"}, []string{"code: 1015 cannot be sent in a close frame"}},
			{"unknown code name", []string{"close", id, "--code", "restart"}, []string{`code: "restart" is not a close code name`}},
			{"reason too long", []string{"close", id, "--reason", strings.Repeat("r", 124)}, []string{"reason: is 124 bytes"}},
			{"bad match", []string{"close", "--all", "--match", "client=nowhere"}, []string{`client: "nowhere" is not a CIDR`, "(400)"}},
		} {
			t.Run(tt.name, func(t *testing.T) {
				_, err := p.cli(t, tt.args...)
				wantFailure(t, err, tt.want...)
			})
		}
		if got := roundTrip(t, conn, "untouched"); got != "untouched" {
			t.Errorf("got %q; want %q", got, "untouched")
		}
	})
}

func TestCLIToken(t *testing.T) {
	cliEnv(t)
	p := startCLIProxy(t, "[admin]\ntoken = \"secret\"\n")
	for _, tt := range []struct {
		name   string
		env    string // WSCHAOS_ADMIN_TOKEN for the client
		args   []string
		wantOK bool
	}{
		{"right token", "", []string{"rules", "--token", "secret"}, true},
		{"token from the environment", "secret", []string{"rules"}, true},
		{"wrong token", "", []string{"rules", "--token", "guess"}, false},
		{"no token", "", []string{"sessions"}, false},
		{"flag over the environment", "secret", []string{"reload", "--token", "guess"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("WSCHAOS_ADMIN_TOKEN", tt.env) // the proxy read its token at start
			out, err := p.cli(t, tt.args...)
			if tt.wantOK {
				if err != nil || !strings.HasPrefix(out, "NAME ") {
					t.Errorf("got %q, %v; want the rules table", out, err)
				}
				return
			}
			wantFailure(t, err, "missing or wrong token", "(401)", "--token TOKEN or WSCHAOS_ADMIN_TOKEN")
		})
	}
}

func TestCLIUnreachable(t *testing.T) {
	cliEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	for _, tt := range []struct {
		name string
		env  string // WSCHAOS_ADMIN
		args []string
		from string
	}{
		{"flag", "", []string{"sessions", "--admin", "http://" + addr}, "came from --admin"},
		{"flag without scheme", "", []string{"rules", "--admin", addr}, "came from --admin"},
		{"environment", "http://" + addr, []string{"close", "1"}, "came from WSCHAOS_ADMIN"},
		{"follow", "http://" + addr, []string{"events", "--follow"}, "came from WSCHAOS_ADMIN"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("WSCHAOS_ADMIN", tt.env)
			_, _, err := runFor(t, tt.args...)
			wantFailure(t, err, "cannot reach the admin API at http://"+addr, "connection refused",
				"--admin URL or WSCHAOS_ADMIN", tt.from)
		})
	}
}

func TestCLIUsageErrors(t *testing.T) {
	cliEnv(t)
	for _, tt := range []struct {
		name    string
		args    []string
		wantMsg string
	}{
		{"close without id", []string{"close"}, "close: give one session id, or --all"},
		{"close two ids", []string{"close", "1", "2"}, "close: give one session id, or --all"},
		{"close id and all", []string{"close", "1", "--all"}, "close: give a session id or --all, not both"},
		{"close bad id", []string{"close", "abc"}, `close: "abc" is not a session id`},
		{"match without all", []string{"close", "1", "--match", "path=/a"}, "--match picks sessions for close --all"},
		{"match unknown key", []string{"close", "--all", "--match", "port=80"}, `"port" is not a key`},
		{"match without value", []string{"close", "--all", "--match", "path"}, "write KEY=GLOB"},
		{"match twice", []string{"close", "--all", "--match", "path=/a", "--match", "path=/b"}, "path is given twice"},
		{"match empty name", []string{"close", "--all", "--match", "query.=1"}, `"query." names no parameter`},
		{"code without value", []string{"close", "1", "--code"}, "flag needs an argument: -code"},
		{"sessions argument", []string{"sessions", "all"}, `sessions: unexpected argument "all"`},
		{"unknown flag", []string{"sessions", "--follow"}, "flag provided but not defined: -follow"},
		{"rules argument", []string{"rules", "x"}, `rules: unexpected argument "x"`},
		{"reset without id", []string{"reset"}, "reset takes one argument: the session id"},
		{"drop bad id", []string{"drop", "-"}, `drop: "-" is not a session id`},
		{"enable without name", []string{"enable"}, "enable takes one argument: the rule name"},
		{"disable two names", []string{"disable", "a", "b"}, "disable takes one argument: the rule name"},
		{"bad admin URL", []string{"rules", "--admin", "ftp://127.0.0.1:1"}, `--admin: "ftp://127.0.0.1:1" is not the admin API's URL`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := runFor(t, tt.args...)
			checkUsageError(t, err, tt.wantMsg)
		})
	}
	t.Run("help", func(t *testing.T) {
		stdout, _, err := runFor(t, "close", "--help")
		if err != nil {
			t.Fatalf("got %v; want %v", err, nil)
		}
		for _, want := range []string{"wschaos sessions [--json]", "wschaos close ID", "wschaos close --all", "--match KEY=GLOB",
			"wschaos events [--follow] [--json]", "--admin URL", "WSCHAOS_ADMIN", "--token TOKEN", "default 1001"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("got %q; want it to contain %q", stdout, want)
			}
		}
	})
}

func TestParseInterleaved(t *testing.T) {
	for _, tt := range []struct {
		args     []string
		wantPos  []string
		wantCode string
	}{
		{[]string{"3", "--code", "1012"}, []string{"3"}, "1012"},
		{[]string{"--code", "1012", "3"}, []string{"3"}, "1012"},
		{[]string{"--code=1012", "3", "4"}, []string{"3", "4"}, "1012"},
		{[]string{"3", "--code", "1012", "4"}, []string{"3", "4"}, "1012"},
		{[]string{"3", "--", "--code", "1012"}, []string{"3", "--code", "1012"}, ""},
		{nil, nil, ""},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			fs := flag.NewFlagSet("close", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			code := fs.String("code", "", "")
			pos, err := parseInterleaved(fs, tt.args)
			if err != nil {
				t.Fatalf("got %v; want %v", err, nil)
			}
			if !reflect.DeepEqual(pos, tt.wantPos) || *code != tt.wantCode {
				t.Errorf("got %q and code %q; want %q and code %q", pos, *code, tt.wantPos, tt.wantCode)
			}
		})
	}
}

func TestSessionRules(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name  string
		rules []proxy.SessionRule
		want  string
	}{
		{"none", nil, "-"},
		{"not picked", []proxy.SessionRule{{Name: "r"}}, "r"},
		{"picked", []proxy.SessionRule{{Name: "r", Hit: true}}, "r*"},
		{"picked, fires later", []proxy.SessionRule{{Name: "r", Hit: true, FiresAt: now.Add(90 * time.Second)}}, "r*(in 1m30s)"},
		{"fired", []proxy.SessionRule{{Name: "r", Hit: true, Fired: true, FiresAt: now.Add(-time.Second)}}, "r!"},
		{"several", []proxy.SessionRule{{Name: "a", Hit: true, Fired: true}, {Name: "b"}}, "a! b"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := sessionRules(tt.rules, now); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func TestEventLine(t *testing.T) {
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.Local)
	for _, tt := range []struct {
		name string
		e    proxy.Event
		want string
	}{
		{"opened", proxy.Event{Time: at, Kind: proxy.EventOpened, Session: 3, Client: "127.0.0.1:5000", Path: "/chat",
			Query: "room=1", Subprotocol: "chat", Duration: 1500 * time.Microsecond},
			`2025-03-01 12:00:00.000 opened      3 127.0.0.1:5000 path="/chat?room=1" subprotocol=chat handshake=2ms`},
		{"fault", proxy.Event{Time: at, Kind: proxy.EventFault, Session: 3, Client: "127.0.0.1:5000", Path: "/chat",
			Rule: "manual", Trigger: "manual", Action: "close", By: "manual", Code: 1012, Reason: "deploy now"},
			`2025-03-01 12:00:00.000 fault       3 127.0.0.1:5000 path=/chat rule=manual trigger=manual action=close by=manual code=1012 reason="deploy now"`},
		{"closed", proxy.Event{Time: at, Kind: proxy.EventClosed, Session: 3, Client: "127.0.0.1:5000", By: "client",
			Why: "close frame", Code: 1000, ClientCode: 1000, UpstreamCode: 1000, Duration: 61 * time.Second},
			`2025-03-01 12:00:00.000 closed      3 127.0.0.1:5000 by=client why="close frame" code=1000 client_code=1000 upstream_code=1000 lasted=1m1s`},
		{"refused", proxy.Event{Time: at, Kind: proxy.EventRefused, Client: "127.0.0.1:5000", Path: "/", Refusal: "unreachable",
			Status: 502, Why: "dial tcp: refused"},
			`2025-03-01 12:00:00.000 refused     - 127.0.0.1:5000 path=/ refusal=unreachable status=502 why="dial tcp: refused"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := eventLine(tt.e); got != tt.want {
				t.Errorf("got\n%s; want\n%s", got, tt.want)
			}
		})
	}
}
