//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a process the harness started. Each runs in a process group of
// its own (nginx's workers join their master's), which is what stop
// signals, so that nothing it started outlives the harness.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // of Wait, once done is closed
}

var children struct {
	mu   sync.Mutex
	list []*child
}

// startChild starts cmd, on the CPUs on if not nil, and registers it for
// stopAll.
func startChild(name string, cmd *exec.Cmd, on *cpuSet) (*child, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 2 * time.Second
	if err := start(cmd, on); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	children.mu.Lock()
	children.list = append(children.list, c)
	children.mu.Unlock()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the child's process group, and SIGKILL after
// grace if it has not exited by then.
func (c *child) stop(grace time.Duration) {
	if c.exited() {
		syscall.Kill(-c.pid(), syscall.SIGKILL) // strays of the group, if any
		return
	}
	syscall.Kill(-c.pid(), syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
	}
	syscall.Kill(-c.pid(), syscall.SIGKILL)
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		logf("%s (pid %d) did not exit after SIGKILL", c.name, c.pid())
	}
}

// stopAll stops every child still running, the last started first.
func stopAll() {
	children.mu.Lock()
	list := children.list
	children.list = nil
	children.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		list[i].stop(3 * time.Second)
	}
}

// end stops c, with a grace of 3 s, and forgets it.
func (c *child) end() {
	c.stop(3 * time.Second)
	forget(c)
}

// startTailed starts cmd as startChild does, keeping the last lines of
// its standard error for error messages.
func startTailed(name string, cmd *exec.Cmd, on *cpuSet) (*child, *tail, error) {
	errs := &tail{}
	cmd.Stderr = &lineWriter{fn: func(l []byte) { errs.add(string(l)) }}
	c, err := startChild(name, cmd, on)
	return c, errs, err
}

// forget removes a stopped child from the registry.
func forget(c *child) {
	children.mu.Lock()
	defer children.mu.Unlock()
	for i, x := range children.list {
		if x == c {
			children.list = append(children.list[:i], children.list[i+1:]...)
			return
		}
	}
}

// raiseNofile raises the soft RLIMIT_NOFILE to the hard limit; children
// inherit it. It returns the limit in force.
func raiseNofile() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 1024
	}
	rl.Cur = rl.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		logf("raise RLIMIT_NOFILE: %v", err)
	}
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	return rl.Cur
}

// rssKiB returns the summed VmRSS of pids, in KiB.
func rssKiB(pids []int) (int64, error) {
	var sum int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return 0, err
		}
		found := false
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				f := strings.Fields(v)
				n, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					return 0, err
				}
				sum += n
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("pid %d: no VmRSS", pid)
		}
	}
	return sum, nil
}

// cpuTime returns the CPU time, user and system, that pids have used, from
// /proc/PID/stat (utime and stime, in USER_HZ = 100 ticks a second).
func cpuTime(pids []int) (time.Duration, error) {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, err
		}
		// The fields after the command name, which is in parentheses and
		// may hold spaces: state is the first, utime the 12th, stime the 13th.
		i := bytes.LastIndexByte(b, ')')
		f := strings.Fields(string(b[i+1:]))
		if i < 0 || len(f) < 13 {
			return 0, fmt.Errorf("pid %d: short /proc stat", pid)
		}
		for _, v := range f[11:13] {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("pid %d: /proc stat: %w", pid, err)
			}
			ticks += n
		}
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// cpuMeter measures the CPU time an instance's processes use between
// start and stop; it measures nothing for an instance without processes
// (direct).
type cpuMeter struct {
	pids  func() []int
	start time.Duration
	err   error
}

func startCPU(pids func() []int) *cpuMeter {
	m := &cpuMeter{pids: pids}
	if pids != nil {
		m.start, m.err = cpuTime(pids())
	}
	return m
}

// used returns the CPU time used since start, and whether it could be
// measured.
func (m *cpuMeter) used() (time.Duration, bool) {
	if m.pids == nil || m.err != nil {
		return 0, false
	}
	end, err := cpuTime(m.pids())
	if err != nil {
		return 0, false
	}
	return end - m.start, true
}

// per returns the CPU time used since start divided by n, in µs, and
// whether it could be measured.
func (m *cpuMeter) per(n int) (float64, bool) {
	d, ok := m.used()
	if !ok || n <= 0 {
		return 0, false
	}
	return float64(d) / float64(time.Microsecond) / float64(n), true
}

// fdCount returns the number of open file descriptors of pids.
func fdCount(pids []int) int {
	n := 0
	for _, pid := range pids {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err == nil {
			n += len(ents)
		}
	}
	return n
}

// childPIDs returns the processes whose parent is ppid (nginx's workers).
func childPIDs(ppid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) {
			out = append(out, pid)
		}
	}
	return out
}

// waitFDs waits until pids hold at most limit file descriptors, or for
// at most d; it returns the count last seen.
func waitFDs(pids func() []int, limit int, d time.Duration) int {
	deadline := time.Now().Add(d)
	for {
		n := fdCount(pids())
		if n <= limit || time.Now().After(deadline) {
			return n
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// lineWriter calls fn with every complete line written to it; a child's
// stderr is read through one.
type lineWriter struct {
	mu  sync.Mutex
	buf []byte
	fn  func(line []byte)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.fn(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) == 0 {
		w.buf = nil // let a large burst's buffer go
	}
	return len(p), nil
}

// tail keeps the last lines a child wrote, for error messages.
type tail struct {
	mu    sync.Mutex
	lines []string
}

func (t *tail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 8 {
		t.lines = t.lines[1:]
	}
	t.lines = append(t.lines, line)
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, " | ")
}
