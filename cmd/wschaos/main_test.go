package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runFor runs the program with args and a context that ends after a few
// seconds, for commands that are expected to return by themselves.
func runFor(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err = run(ctx, args, &out, &errOut)
	if ctx.Err() != nil {
		t.Fatalf("run %q: got %v; want it to return before its context ends", args, ctx.Err())
	}
	return out.String(), errOut.String(), err
}

func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		t.Run(arg, func(t *testing.T) {
			stdout, _, err := runFor(t, arg)
			if err != nil {
				t.Fatalf("got %v; want %v", err, nil)
			}
			if want := "wschaos 0.1.0\n"; stdout != want {
				t.Errorf("got %q; want %q", stdout, want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}, {"run", "-h"}, {"run", "--help"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			stdout, _, err := runFor(t, args...)
			if err != nil {
				t.Fatalf("got %v; want %v", err, nil)
			}
			if code := exitCode(err); code != 0 {
				t.Errorf("exit code: got %v; want %v", code, 0)
			}
			for _, want := range []string{"Usage:", "wschaos run [flags]", "--config FILE", "--listen ADDR", "--upstream URL", "--log-level", "--log-format"} {
				if !strings.Contains(stdout, want) {
					t.Errorf("got %q; want it to contain %q", stdout, want)
				}
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		name    string
		args    []string
		wantMsg string
	}{
		{"no args", nil, "no command given"},
		{"unknown command", []string{"serve"}, `unknown command "serve"`},
		{"unknown flag for run", []string{"run", "--port", "80"}, "flag provided but not defined: -port"},
		{"flag without value", []string{"run", "--config"}, "flag needs an argument"},
		{"extra argument", []string{"run", "wschaos.toml"}, `unexpected argument "wschaos.toml"`},
		{"argument after flags", []string{"run", "--listen", "127.0.0.1:0", "now"}, `unexpected argument "now"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := runFor(t, tt.args...)
			checkUsageError(t, err, tt.wantMsg)
		})
	}
	t.Run("no args prints usage", func(t *testing.T) {
		_, stderr, _ := runFor(t)
		if !strings.Contains(stderr, "Usage:") {
			t.Errorf("got %q; want it to contain %q", stderr, "Usage:")
		}
	})
}

func TestExitCode(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, 0},
		{"usage", &usageError{"bad"}, 2},
		{"wrapped usage", fmt.Errorf("run: %w", &usageError{"bad"}), 2},
		{"failure", errors.New("listen: address already in use"), 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := exitCode(tt.err); got != tt.want {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestRunConfigErrors(t *testing.T) {
	dir := t.TempDir()
	invalid := filepath.Join(dir, "invalid.toml")
	if err := os.WriteFile(invalid, []byte("[proxy]\n\nlisten = \"nowhere\"\n[log]\nlevel = \"loud\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	syntax := filepath.Join(dir, "syntax.toml")
	if err := os.WriteFile(syntax, []byte("[proxy]\nlisten = \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	valid := filepath.Join(dir, "valid.toml")
	if err := os.WriteFile(valid, []byte("[proxy]\nlisten = \"127.0.0.1:0\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A port that is taken: listening on it must fail.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()

	for _, tt := range []struct {
		name string
		args []string
		want []string // fragments of the error
	}{
		{"missing config file", []string{"run", "--config", filepath.Join(dir, "missing.toml")},
			[]string{"missing.toml", "no such file"}},
		{"invalid config file", []string{"run", "--config", invalid},
			[]string{invalid + ":3: proxy.listen: ", invalid + ":5: log.level: "}},
		{"config syntax error", []string{"run", "--config", syntax},
			[]string{syntax + ":2: proxy.listen: "}},
		{"listen not host:port", []string{"run", "--listen", "nowhere"},
			[]string{"command line: proxy.listen: ", `"nowhere" is not host:port`}},
		{"listen not host:port over a file", []string{"run", "--config", valid, "--listen", "nowhere"},
			[]string{"command line: proxy.listen: "}},
		{"listen bad port", []string{"run", "--listen", "127.0.0.1:99999"},
			[]string{"listen"}},
		{"listen taken", []string{"run", "--listen", taken.Addr().String()},
			[]string{"listen", taken.Addr().String()}},
		{"upstream http", []string{"run", "--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:1/"},
			[]string{"command line: proxy.upstream: ", "ws://"}},
		{"log level", []string{"run", "--listen", "127.0.0.1:0", "--log-level", "loud"},
			[]string{"command line: log.level: "}},
		{"log format", []string{"run", "--listen", "127.0.0.1:0", "--log-format", "xml"},
			[]string{"command line: log.format: "}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := runFor(t, tt.args...)
			wantFailure(t, err, tt.want...)
		})
	}
}

// checkUsageError fails the test unless err is a usage error whose message
// contains want, with exit code 2.
func checkUsageError(t *testing.T, err error, want string) {
	t.Helper()
	var ue *usageError
	if !errors.As(err, &ue) {
		t.Fatalf("got %T %v; want %v", err, err, "*usageError")
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("got %v; want it to contain %v", err, want)
	}
	if code := exitCode(err); code != 2 {
		t.Errorf("exit code: got %v; want %v", code, 2)
	}
}
