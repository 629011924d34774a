//go:build linux

package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// env is what every target and workload shares: the temporary directory,
// the echo upstream, the built binaries and the client dialer.
type env struct {
	o      *options
	nofile uint64
	dir    string
	root   string
	echo   *echoProc
	dialer *clientDialer
	// stampDialer's connections keep the kernel's receive times: the
	// fault workloads time close frames by them.
	stampDialer *clientDialer

	wschaosBin string
	wschaosErr error
	wschaosRev string // git describe of the working tree when it was built

	toxiproxyBin string
	toxiproxyErr error

	nginxBin     string
	nginxVersion string
	nginxErr     error

	echoPort map[string]int // upstream port per target, and "faults"

	// cpus, with -proxy-cpus, keeps the proxies and the harness on CPUs
	// apart; nil: every process may run on every CPU.
	cpus *cpuSplit
}

// newEnv prepares the run: temporary directory, echo upstream, builds of
// wschaos and toxiproxy (in parallel, before anything is measured), nginx
// lookup, and checks that the file descriptor limit fits the sizes.
func newEnv(ctx context.Context, o *options, nofile uint64) (*env, error) {
	e := &env{o: o, nofile: nofile, dialer: newClientDialer(o.srcIPs), stampDialer: newClientDialer(o.srcIPs), echoPort: map[string]int{}}
	e.stampDialer.stamp = true
	var err error
	if e.root, err = moduleRoot(); err != nil {
		return nil, err
	}
	if e.dir, err = os.MkdirTemp("", "wschaos-bench-"); err != nil {
		return nil, err
	}
	// nginx's workers may run as another user: they must reach the prefix.
	os.Chmod(e.dir, 0o755)
	if o.proxyCPUs != "" {
		if e.cpus, err = newCPUSplit(o.proxyCPUs); err != nil {
			return e, err
		}
	}

	need := uint64(max(o.idleSessions, o.faultEvery, o.connDialers, o.latConns) + 256)
	if nofile < need {
		return e, fmt.Errorf("RLIMIT_NOFILE is %d but the sizes need %d in the harness (and twice that in a proxy): "+
			"raise `ulimit -Hn` or lower -idle-sessions / -fault-every", nofile, need)
	}
	if nofile < 2*need {
		logf("warning: RLIMIT_NOFILE %d may be short for a proxy holding %d sessions (2 descriptors each)", nofile, need-256)
	}

	names := append(slices.Clone(allTargets), "faults")
	if e.echo, err = startEcho(len(names), e.cpus.harnessCPUs()); err != nil {
		return e, err
	}
	for i, n := range names {
		e.echoPort[n] = e.echo.ports[i]
	}

	var wg sync.WaitGroup
	if e.needsWschaos() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.wschaosBin, e.wschaosErr = e.buildWschaos(ctx)
		}()
	}
	if e.wants("toxiproxy") {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.toxiproxyBin, e.toxiproxyErr = e.buildToxiproxy(ctx)
		}()
	}
	if e.wants("nginx") {
		e.nginxBin, e.nginxVersion, e.nginxErr = findNginx(o.nginxBin)
	}
	wg.Wait()
	if e.cpus != nil {
		// After the builds, which may use every CPU.
		if err := e.cpus.pinHarness(); err != nil {
			return e, fmt.Errorf("-proxy-cpus: %w", err)
		}
		logf("%s", e.cpus)
	}
	return e, ctx.Err()
}

// nginxWorkers is nginx's worker_processes. nginx 1.22 counts the
// machine's CPUs for "auto", not those it may run on, so with
// -proxy-cpus "auto" is one worker per proxy CPU, as wschaos's default is
// one loop per CPU it may run on.
func (e *env) nginxWorkers() string {
	if e.o.nginxWorkers == "auto" && e.cpus != nil {
		return strconv.Itoa(e.cpus.proxy.count())
	}
	return e.o.nginxWorkers
}

func (e *env) close() {
	if e.echo != nil {
		e.echo.stop()
	}
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
}

// harnessPIDs are the processes that share the machine with the proxy
// under test: this one (the clients, and the reader of wschaos's log) and
// the echo upstream.
func (e *env) harnessPIDs() []int {
	return []int{os.Getpid(), e.echo.c.pid()}
}

// harnessCPUNote explains the harness CPU figures.
const harnessCPUNote = "user and system time of the harness's processes: the clients (which also read wschaos's log) and the echo upstream"

// cpuQuotientNote explains the quotient of the two CPU figures.
const cpuQuotientNote = "the two CPU figures above divided: the machine's other work moves both, their quotient much less"

// wants reports whether the target or workload name was selected.
func (e *env) wants(name string) bool {
	return slices.Contains(split(e.o.targets), name) || slices.Contains(split(e.o.loads), name)
}

func (e *env) wantsLoad(name string) bool { return slices.Contains(split(e.o.loads), name) }

func split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func (e *env) needsWschaos() bool {
	return e.wants("wschaos") || e.wants("wschaos-rules") || e.wants("faults")
}

func (e *env) selectedTargets() []*target {
	var out []*target
	for _, t := range targets(e) {
		if slices.Contains(split(e.o.targets), t.name) {
			out = append(out, t)
		}
	}
	return out
}

// buildWschaos builds the binary of the working tree.
func (e *env) buildWschaos(ctx context.Context) (string, error) {
	bin := filepath.Join(e.dir, "wschaos")
	t := time.Now()
	e.wschaosRev = gitDescribe(e.root) // before: an edit during the build makes it dirty
	if err := e.goCmd(ctx, e.root, nil, "build", "-o", bin, "./cmd/wschaos"); err != nil {
		return "", fmt.Errorf("go build ./cmd/wschaos: %w", err)
	}
	logf("built wschaos in %s", time.Since(t).Round(time.Millisecond))
	return bin, nil
}

// buildToxiproxy builds toxiproxy's server at the chosen version, fetched
// through the Go module proxy (the module cache makes later runs fast).
func (e *env) buildToxiproxy(ctx context.Context) (string, error) {
	if e.o.toxiproxyVersion == "" {
		return "", fmt.Errorf("skipped (-toxiproxy \"\")")
	}
	gobin := filepath.Join(e.dir, "toxiproxy-bin")
	pkg := "github.com/Shopify/toxiproxy/v2/cmd/server@" + e.o.toxiproxyVersion
	t := time.Now()
	if err := e.goCmd(ctx, e.dir, []string{"GOBIN=" + gobin, "GOWORK=off"}, "install", pkg); err != nil {
		return "", fmt.Errorf("go install %s: %w", pkg, err)
	}
	logf("built toxiproxy %s in %s", e.o.toxiproxyVersion, time.Since(t).Round(time.Millisecond))
	return filepath.Join(gobin, "server"), nil
}

func (e *env) goCmd(ctx context.Context, dir string, extraEnv []string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, e.o.buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), extraEnv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if len(msg) > 600 {
			msg = msg[len(msg)-600:]
		}
		return fmt.Errorf("%w: %s", err, msg)
	}
	return nil
}

// findNginx locates nginx and its version.
func findNginx(bin string) (string, string, error) {
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("nginx"); err != nil {
			if _, serr := os.Stat("/usr/sbin/nginx"); serr != nil {
				return "", "", fmt.Errorf("nginx not installed (apt-get install -y nginx)")
			}
			bin = "/usr/sbin/nginx"
		}
	}
	out, err := exec.Command(bin, "-v").CombinedOutput()
	if err != nil {
		return "", "", fmt.Errorf("%s -v: %w", bin, err)
	}
	v := strings.TrimSpace(string(out))
	v = strings.TrimPrefix(strings.TrimPrefix(v, "nginx version: "), "nginx/")
	return bin, v, nil
}

// components lists what was measured, with versions, for the report.
func (e *env) components() map[string]string {
	loops := "loops: its default, one per CPU"
	if e.o.wschaosLoops >= 0 {
		loops = fmt.Sprintf("loops = %d", e.o.wschaosLoops)
	}
	m := map[string]string{"wschaos": "working tree " + e.wschaosRev + ", " + loops}
	if e.wants("nginx") {
		if e.nginxErr != nil {
			m["nginx"] = "missing: " + e.nginxErr.Error()
		} else {
			m["nginx"] = e.nginxVersion + ", worker_processes " + e.nginxWorkers()
			if e.o.nginxAccessLog {
				m["nginx"] += ", access log on"
			}
		}
	}
	if e.wants("toxiproxy") {
		if e.toxiproxyErr != nil {
			m["toxiproxy"] = "missing: " + e.toxiproxyErr.Error()
		} else {
			m["toxiproxy"] = e.o.toxiproxyVersion
		}
	}
	return m
}

func gitDescribe(dir string) string {
	out, err := exec.Command("git", "-C", dir, "describe", "--always", "--dirty").Output()
	if err != nil {
		return "(no git)"
	}
	return strings.TrimSpace(string(out))
}

// command is the command line the report says was run.
func (e *env) command() string {
	args := []string{"go", "run", "./bench"}
	for _, a := range os.Args[1:] {
		if a == "" || strings.ContainsAny(a, " \t\"'") {
			a = strconv.Quote(a)
		}
		args = append(args, a)
	}
	return strings.Join(args, " ")
}
