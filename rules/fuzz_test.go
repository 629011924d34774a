package rules

import (
	"strings"
	"testing"
)

func FuzzParseGlob(f *testing.F) {
	for _, s := range []string{
		"", "/chat", "/chat/*", "v?", "[abc]", "[!a-z]x", `\*`, `a\`, "[", "[]", "[]a]", "[!]",
		"[z-a]", "[[:alpha:]]", "/café", `\é`, "a.b+(c)", "\xff", "*\n*",
	} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, glob, in string) {
		g, err := ParseGlob(glob)
		if err != nil {
			if g != nil {
				t.Fatalf("ParseGlob(%q): got %v and error %v; want nil with the error", glob, g, err)
			}
			return
		}
		if got := g.String(); got != glob {
			t.Fatalf("String: got %q; want %q", got, glob)
		}
		g.Match(in) // never panics
		if strings.ContainsAny(glob, `*?[\`) {
			return
		}
		// Without metacharacters, a glob is its own text and nothing else.
		if !g.Match(glob) {
			t.Errorf("ParseGlob(%q).Match(itself): got false; want true", glob)
		}
		if g.Match(glob + "x") {
			t.Errorf("ParseGlob(%q).Match(%q): got true; want false", glob, glob+"x")
		}
		if glob != "" && g.Match(glob[:len(glob)-1]) {
			t.Errorf("ParseGlob(%q).Match(%q): got true; want false", glob, glob[:len(glob)-1])
		}
		if in != glob && g.Match(in) {
			t.Errorf("ParseGlob(%q).Match(%q): got true; want false", glob, in)
		}
	})
}

func FuzzCompile(f *testing.F) {
	f.Add("30s", "", "1012", "bye", "/chat/*", "10.0.0.0/8")
	f.Add("10s..30s", "", "service_restart", "", "", "")
	f.Add("", "1m", "none", "", "[!a]", "::1")
	f.Add("", "", "1006", "x", "[", "nowhere")
	f.Add("1s", "1s", "", "\xff", `\`, "::ffff:10.0.0.0/104")
	f.Add("-1s..1s", "0s", "5000", strings.Repeat("a", 124), "*", "10.0.0.0/33")
	f.Fuzz(func(t *testing.T, after, every, code, reason, path, client string) {
		sp := Spec{
			Name:   "fuzz",
			Match:  MatchSpec{Path: path, Client: client},
			After:  after,
			Every:  every,
			Action: "close",
			Reason: &reason,
		}
		if code != "" {
			sp.Code = code
		}
		set, errs := Compile([]Spec{sp}, Options{})
		if errs != nil {
			if set != nil {
				t.Fatalf("got a set and errors %v", errs)
			}
			for _, e := range errs {
				if e.Msg == "" || e.Index != 0 || e.Rule != "fuzz" {
					t.Errorf("malformed error %#v", e)
				}
				_ = e.Error()
			}
			return
		}
		if len(set.Rules) != 1 {
			t.Fatalf("got %d rules; want 1", len(set.Rules))
		}
		r := set.Rules[0]
		if r.String() == "" {
			t.Errorf("got an empty String for %+v", sp)
		}
		if r.Trigger == After {
			if d := r.Delay(1, 1); d < r.After || d > r.AfterMax {
				t.Errorf("Delay: got %v; want within [%v, %v]", d, r.After, r.AfterMax)
			}
		}
		if r.Action.Kind != Close || len(r.Action.Reason) > MaxReason {
			t.Errorf("got action %+v from a close spec", r.Action)
		}
		r.Match.Matches(&Session{Path: path})
	})
}
