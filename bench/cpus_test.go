//go:build linux

package main

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func TestParseCPUList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // the set's String; "" for an error
	}{
		{"1", "1"},
		{"0,2-3", "0,2-3"},
		{" 1 , 3", "1,3"},
		{"0-0", "0"},
		{"3,1,2", "1-3"},
		{"0-1,1-2,7", "0-2,7"},
		{"63-65", "63-65"},
		{"1023", "1023"},
		{"", ""},
		{"a", ""},
		{"3-1", ""},
		{"-1", ""},
		{"1-", ""},
		{"1,,2", ""},
		{"1024", ""},
		{"0-1024", ""},
	} {
		t.Run(tc.in, func(t *testing.T) {
			s, err := parseCPUList(tc.in)
			if tc.want == "" {
				if err == nil {
					t.Fatalf("got %v; want an error", s)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v; want %s", err, tc.want)
			}
			if got := s.String(); got != tc.want {
				t.Errorf("got %s; want %s", got, tc.want)
			}
		})
	}
}

// allowedCPUs is the set the test may run on, with at least n CPUs.
func allowedCPUs(t *testing.T, n int) cpuSet {
	t.Helper()
	s, err := affinity(0)
	if err != nil {
		t.Fatal(err)
	}
	if s.count() < n {
		if os.Getenv("CI") != "" {
			t.Fatalf("%d CPUs (%s); the test needs %d", s.count(), s, n)
		}
		t.Skipf("%d CPUs (%s); the test needs %d", s.count(), s, n)
	}
	return s
}

// first is the set's lowest CPU, alone.
func first(s cpuSet) cpuSet {
	var one cpuSet
	for cpu := range maxCPUs {
		if s.has(cpu) {
			one.add(cpu)
			break
		}
	}
	return one
}

// allowedList reads Cpus_allowed_list of every thread of process pid.
func allowedList(t *testing.T, pid int) []string {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, task := range tasks {
		b, err := os.ReadFile(dir + "/" + task.Name() + "/status")
		if err != nil {
			continue // the thread has exited
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
				out = append(out, strings.TrimSpace(v))
			}
		}
	}
	return out
}

func TestNewCPUSplit(t *testing.T) {
	allowed := allowedCPUs(t, 1)
	var outside cpuSet
	outside.add(maxCPUs - 1)
	for _, tc := range []struct {
		name, list string
		ok         bool
	}{
		{"every CPU", allowed.String(), false},
		{"not allowed", outside.String(), false},
		{"not a list", "x", false},
		{"one of several", first(allowed).String(), allowed.count() > 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := newCPUSplit(tc.list)
			if !tc.ok {
				if err == nil {
					t.Fatalf("got %s; want an error", c)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, want := c.proxy.String(), tc.list; got != want {
				t.Errorf("proxy CPUs: got %s; want %s", got, want)
			}
			if got, want := c.harness.String(), allowed.minus(c.proxy).String(); got != want {
				t.Errorf("harness CPUs: got %s; want %s", got, want)
			}
		})
	}
}

// TestStartOnCPUs starts a child on one CPU and checks that the child has
// that CPU only and that this process's threads kept every CPU they had.
func TestStartOnCPUs(t *testing.T) {
	allowed := allowedCPUs(t, 2)
	on := first(allowed)
	cmd := exec.Command("sleep", "30")
	if err := start(cmd, &on); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	for _, got := range allowedList(t, cmd.Process.Pid) {
		if got != on.String() {
			t.Errorf("child: got CPUs %s; want %s", got, on)
		}
	}
	for _, got := range allowedList(t, os.Getpid()) {
		if got != allowed.String() {
			t.Errorf("harness thread: got CPUs %s; want %s", got, allowed)
		}
	}
}

// TestPinHarness confines this process to the harness's CPUs, checks
// every thread, then lets them run everywhere again.
func TestPinHarness(t *testing.T) {
	allowed := allowedCPUs(t, 2)
	c, err := newCPUSplit(first(allowed).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		back := cpuSplit{harness: allowed}
		if err := back.pinHarness(); err != nil {
			t.Error(err)
		}
	})
	if err := c.pinHarness(); err != nil {
		t.Fatal(err)
	}
	for _, got := range allowedList(t, os.Getpid()) {
		if got != c.harness.String() {
			t.Errorf("thread: got CPUs %s; want %s", got, c.harness)
		}
	}
	// A child started without a set of its own inherits the harness's.
	cmd := exec.Command("sleep", "30")
	if err := start(cmd, nil); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	for _, got := range allowedList(t, cmd.Process.Pid) {
		if got != c.harness.String() {
			t.Errorf("child: got CPUs %s; want %s", got, c.harness)
		}
	}
}
