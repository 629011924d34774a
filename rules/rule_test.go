package rules

import (
	"fmt"
	"reflect"
	"testing"
)

func TestRuleString(t *testing.T) {
	for _, tt := range []struct {
		name string
		spec Spec
		opts Options
		want string
	}{
		{
			name: "close with a match",
			spec: Spec{
				Name:   "deploy-restart",
				Match:  MatchSpec{Path: "/chat/*", Header: map[string]string{"X-Tenant": "acme"}},
				After:  "30s",
				Action: "close",
				Code:   int64(1012),
				Reason: ptr("service restart"),
			},
			want: `deploy-restart: after 30s -> close 1012 (service_restart) "service restart" to client; match path=/chat/* header[x-tenant]=acme`,
		},
		{
			name: "range, probability and limit",
			spec: Spec{
				Name:        "flaky",
				After:       "10s..1m",
				Probability: ptr(0.5),
				Limit:       ptr(int64(10)),
				Action:      "reset",
				To:          "both",
			},
			want: "flaky: after 10s..1m0s, probability 0.5, at most 10 times -> reset to both",
		},
		{
			name: "after_messages and drop",
			spec: Spec{
				Name:          "chatty",
				AfterMessages: ptr(int64(100)),
				Direction:     "client",
				Action:        "drop",
				To:            "upstream",
			},
			want: "chatty: after 100 messages from client -> drop to upstream",
		},
		{
			name: "on_message and an empty close frame",
			spec: Spec{
				Name:      "pong",
				OnMessage: ptr("^ping$"),
				Direction: "upstream",
				Action:    "close",
				Code:      "none",
			},
			want: `pong: on a message from upstream matching "^ping$" -> close with an empty frame (1005) to client`,
		},
		{
			name: "reject",
			spec: Spec{
				Name:       "gate",
				Match:      MatchSpec{Client: "10.0.0.0/8"},
				On:         "connect",
				Action:     "reject",
				Status:     ptr(int64(429)),
				RetryAfter: ptr(int64(30)),
			},
			want: "gate: on connect -> reject with 429, Retry-After 30; match client=10.0.0.0/8",
		},
		{
			name: "reject with the defaults",
			spec: Spec{
				Name:   "gate",
				On:     "connect",
				Action: "reject",
			},
			want: "gate: on connect -> reject with 503",
		},
		{
			name: "hang after bytes",
			spec: Spec{
				Name:       "stall",
				AfterBytes: "1MiB",
				Action:     "hang",
				Duration:   "1m",
			},
			want: "stall: after 1048576 bytes from both -> hang both, reset after 1m0s",
		},
		{
			name: "delay every minute",
			spec: Spec{
				Name:      "slow",
				Every:     "1m",
				Direction: "client",
				Action:    "delay",
				Latency:   "200ms",
				Jitter:    "50ms",
			},
			want: "slow: every 1m0s -> delay client by 200ms + up to 50ms",
		},
		{
			name: "tls_fail",
			spec: Spec{
				Name:   "handshake",
				Match:  MatchSpec{Client: "192.168.1.7"},
				On:     "connect",
				Action: "tls_fail",
			},
			opts: Options{TLS: true},
			want: "handshake: on connect -> fail the TLS handshake; match client=192.168.1.7/32",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			set, errs := Compile([]Spec{tt.spec}, tt.opts)
			if errs != nil {
				t.Fatalf("got errors %v; want none", errs)
			}
			if got := set.Rules[0].String(); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

// sameBase is a valid spec that sets every key that goes with a close.
func sameBase() Spec {
	return Spec{
		Name:        "r",
		Match:       MatchSpec{Path: "/a", Query: map[string]string{"q": "1"}, Header: map[string]string{"X-A": "1"}, Subprotocol: "p", Client: "10.0.0.0/8"},
		After:       "1s..2s",
		Probability: ptr(0.5),
		Limit:       ptr(int64(3)),
		Action:      "close",
		Code:        int64(1012),
		Reason:      ptr("bye"),
		To:          "both",
	}
}

func compileOneRule(t *testing.T, sp Spec, index int) *Rule {
	t.Helper()
	specs := make([]Spec, index+1)
	for i := range specs[:index] {
		specs[i] = Spec{Name: "filler" + string(rune('a'+i)), On: "connect", Action: "reset"}
	}
	specs[index] = sp
	set, errs := Compile(specs, Options{TLS: true})
	if errs != nil {
		t.Fatalf("compile %+v: %v", sp, errs)
	}
	return set.Rules[index]
}

func TestRuleSame(t *testing.T) {
	t.Run("identical specs", func(t *testing.T) {
		a, b := compileOneRule(t, sameBase(), 0), compileOneRule(t, sameBase(), 0)
		if !a.Same(b) || !b.Same(a) {
			t.Errorf("got false; want true")
		}
	})
	t.Run("identical specs in another place", func(t *testing.T) {
		a, b := compileOneRule(t, sameBase(), 0), compileOneRule(t, sameBase(), 2)
		if !a.Same(b) {
			t.Errorf("got false; want true")
		}
	})
	for _, tt := range []struct {
		name   string
		change func(*Spec)
	}{
		{
			name:   "name",
			change: func(s *Spec) { s.Name = "r2" },
		},
		{
			name:   "match.path",
			change: func(s *Spec) { s.Match.Path = "/b" },
		},
		{
			name:   "match.query",
			change: func(s *Spec) { s.Match.Query = map[string]string{"q": "2"} },
		},
		{
			name:   "match.header",
			change: func(s *Spec) { s.Match.Header = map[string]string{"X-A": "1", "X-B": "2"} },
		},
		{
			name:   "match.subprotocol",
			change: func(s *Spec) { s.Match.Subprotocol = "p2" },
		},
		{
			name:   "match.client",
			change: func(s *Spec) { s.Match.Client = "10.0.0.0/16" },
		},
		{
			name:   "after",
			change: func(s *Spec) { s.After = "1s..3s" },
		},
		{
			name:   "trigger",
			change: func(s *Spec) { s.After, s.Every = "", "1s" },
		},
		{
			name:   "probability",
			change: func(s *Spec) { s.Probability = ptr(0.25) },
		},
		{
			name:   "probability removed",
			change: func(s *Spec) { s.Probability = nil },
		},
		{
			name:   "limit",
			change: func(s *Spec) { s.Limit = ptr(int64(4)) },
		},
		{
			name:   "code",
			change: func(s *Spec) { s.Code = int64(1013) },
		},
		{
			name:   "code written as a name",
			change: func(s *Spec) { s.Code = "service_restart" },
		},
		{
			name:   "reason",
			change: func(s *Spec) { s.Reason = ptr("later") },
		},
		{
			name:   "to",
			change: func(s *Spec) { s.To = "client" },
		},
		{
			name:   "action",
			change: func(s *Spec) { s.Action, s.Code, s.Reason = "reset", nil, nil },
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sp := sameBase()
			tt.change(&sp)
			a, b := compileOneRule(t, sameBase(), 0), compileOneRule(t, sp, 0)
			if a.Same(b) || b.Same(a) {
				t.Errorf("got true; want false")
			}
		})
	}
}

// TestRuleSameEveryField changes each field of Spec and MatchSpec in turn,
// so that a field added later cannot be left out of Same.
func TestRuleSameEveryField(t *testing.T) {
	base := Spec{}
	var fields []func(*Spec) reflect.Value
	st := reflect.TypeFor[Spec]()
	for i := range st.NumField() {
		if st.Field(i).Name == "Match" {
			mt := reflect.TypeFor[MatchSpec]()
			for j := range mt.NumField() {
				fields = append(fields, func(s *Spec) reflect.Value { return reflect.ValueOf(&s.Match).Elem().Field(j) })
			}
			continue
		}
		fields = append(fields, func(s *Spec) reflect.Value { return reflect.ValueOf(s).Elem().Field(i) })
	}
	for _, field := range fields {
		sp := base
		v := field(&sp)
		switch v.Kind() {
		case reflect.String:
			v.SetString("x")
		case reflect.Pointer:
			v.Set(reflect.New(v.Type().Elem()))
		case reflect.Interface:
			v.Set(reflect.ValueOf("x"))
		case reflect.Map:
			v.Set(reflect.MakeMap(v.Type()))
			v.SetMapIndex(reflect.ValueOf("k"), reflect.ValueOf("v"))
		default:
			t.Fatalf("field of kind %v: teach this test to change it", v.Kind())
		}
		a, b := &Rule{Name: base.Name, spec: base}, &Rule{Name: sp.Name, spec: sp}
		if a.Same(b) {
			t.Errorf("%+v and %+v: got Same; want not", base, sp)
		}
	}
}

func TestKindNames(t *testing.T) {
	for _, tt := range []struct {
		got  fmt.Stringer
		want string
	}{
		{got: OnConnect, want: "connect"},
		{got: After, want: "after"},
		{got: AfterMessages, want: "after_messages"},
		{got: AfterBytes, want: "after_bytes"},
		{got: OnMessage, want: "on_message"},
		{got: Every, want: "every"},
		{got: Close, want: "close"},
		{got: Reset, want: "reset"},
		{got: Drop, want: "drop"},
		{got: Reject, want: "reject"},
		{got: Hang, want: "hang"},
		{got: Delay, want: "delay"},
		{got: TLSFail, want: "tls_fail"},
		{got: FromClient, want: "client"},
		{got: FromUpstream, want: "upstream"},
		{got: FromBoth, want: "both"},
		{got: ToClient, want: "client"},
		{got: ToUpstream, want: "upstream"},
		{got: ToBoth, want: "both"},
	} {
		t.Run(fmt.Sprintf("%T %s", tt.got, tt.want), func(t *testing.T) {
			if got := tt.got.String(); got != tt.want {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}
