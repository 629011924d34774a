//go:build linux

package main

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// cpuSet is a set of CPUs as the kernel's affinity calls take it: bit i of
// word i/64 for CPU i, 1,024 CPUs as glibc's cpu_set_t.
type cpuSet [16]uint64

const maxCPUs = len(cpuSet{}) * 64

func (s *cpuSet) add(cpu int) { s[cpu/64] |= 1 << (cpu % 64) }

func (s cpuSet) has(cpu int) bool { return s[cpu/64]&(1<<(cpu%64)) != 0 }

func (s cpuSet) count() int {
	n := 0
	for _, w := range s {
		n += bits.OnesCount64(w)
	}
	return n
}

// minus is s without the CPUs of t.
func (s cpuSet) minus(t cpuSet) cpuSet {
	for i := range s {
		s[i] &^= t[i]
	}
	return s
}

// String is the set as a CPU list, in the form taskset and
// /proc/PID/status's Cpus_allowed_list use: "0-3,6".
func (s cpuSet) String() string {
	var b strings.Builder
	for cpu := 0; cpu < maxCPUs; cpu++ {
		if !s.has(cpu) {
			continue
		}
		last := cpu
		for last+1 < maxCPUs && s.has(last+1) {
			last++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(cpu))
		if last > cpu {
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(last))
		}
		cpu = last
	}
	return b.String()
}

// parseCPUList reads a CPU list such as "1", "2-3" or "0,4-7".
func parseCPUList(list string) (cpuSet, error) {
	var s cpuSet
	if strings.TrimSpace(list) == "" {
		return s, errors.New("empty CPU list")
	}
	for _, part := range strings.Split(list, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := strconv.Atoi(lo)
		if err != nil || first < 0 || first >= maxCPUs {
			return s, fmt.Errorf("%q is not a CPU number or range (0 to %d)", part, maxCPUs-1)
		}
		last := first
		if isRange {
			last, err = strconv.Atoi(hi)
			if err != nil || last < first || last >= maxCPUs {
				return s, fmt.Errorf("%q is not a CPU range (first-last, 0 to %d)", part, maxCPUs-1)
			}
		}
		for cpu := first; cpu <= last; cpu++ {
			s.add(cpu)
		}
	}
	return s, nil
}

// affinity is the CPU set thread tid may run on (0: the calling thread).
func affinity(tid int) (cpuSet, error) {
	var s cpuSet
	_, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_GETAFFINITY, uintptr(tid), unsafe.Sizeof(s), uintptr(unsafe.Pointer(&s)))
	if errno != 0 {
		return s, fmt.Errorf("sched_getaffinity: %w", errno)
	}
	return s, nil
}

// setAffinity lets thread tid (0: the calling thread) run on s only.
// Threads it creates from then on, and processes it forks, inherit s.
func setAffinity(tid int, s cpuSet) error {
	_, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, uintptr(tid), unsafe.Sizeof(s), uintptr(unsafe.Pointer(&s)))
	if errno != 0 {
		return fmt.Errorf("sched_setaffinity: %w", errno)
	}
	return nil
}

// cpuSplit keeps the proxy under test and the harness on CPUs apart
// (-proxy-cpus): the proxies' processes on proxy, the harness's own (its
// clients, and the echo upstream) on harness, the rest of the CPUs the
// harness was allowed when it started.
type cpuSplit struct {
	proxy, harness cpuSet
}

// newCPUSplit checks list against the CPUs this process may use.
func newCPUSplit(list string) (*cpuSplit, error) {
	proxy, err := parseCPUList(list)
	if err != nil {
		return nil, fmt.Errorf("-proxy-cpus: %w", err)
	}
	allowed, err := affinity(0)
	if err != nil {
		return nil, fmt.Errorf("-proxy-cpus: %w", err)
	}
	if out := proxy.minus(allowed); out.count() > 0 {
		return nil, fmt.Errorf("-proxy-cpus %s: CPU %s not among those this process may use (%s)", list, out, allowed)
	}
	harness := allowed.minus(proxy)
	if harness.count() == 0 {
		return nil, fmt.Errorf("-proxy-cpus %s: no CPU left for the harness (it may use %s)", list, allowed)
	}
	return &cpuSplit{proxy: proxy, harness: harness}, nil
}

// proxyCPUs is where the proxies run, and harnessCPUs where the harness
// does: nil, anywhere, on a nil split (no -proxy-cpus).
func (c *cpuSplit) proxyCPUs() *cpuSet {
	if c == nil {
		return nil
	}
	return &c.proxy
}

func (c *cpuSplit) harnessCPUs() *cpuSet {
	if c == nil {
		return nil
	}
	return &c.harness
}

// String describes the split for the report.
func (c *cpuSplit) String() string {
	return fmt.Sprintf("proxies on CPU %s, harness (clients, echo upstream) on CPU %s", c.proxy, c.harness)
}

// pinHarness confines every thread of this process to the harness's
// CPUs. Threads the runtime starts later are cloned from these and
// inherit it; a thread started while the list is read is caught by the
// next pass.
func (c *cpuSplit) pinHarness() error {
	for range 3 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if err := setAffinity(tid, c.harness); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("thread %d: %w", tid, err)
			}
		}
	}
	return nil
}

// start starts cmd confined to on: the thread that forks it runs on
// those CPUs for the fork, and the child inherits them. Afterwards the
// thread goes back to the set it had.
func start(cmd *exec.Cmd, on *cpuSet) error {
	if on == nil {
		return cmd.Start()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	was, err := affinity(0)
	if err != nil {
		return err
	}
	if err := setAffinity(0, *on); err != nil {
		return err
	}
	startErr := cmd.Start()
	return errors.Join(startErr, setAffinity(0, was))
}
