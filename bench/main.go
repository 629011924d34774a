//go:build linux

// Command bench measures wschaos against a direct connection, nginx and
// toxiproxy on loopback: round-trip latency, throughput, memory per idle
// session, connect rate, and how precisely wschaos's timed faults fire.
//
//	go run ./bench                      # full size, a few minutes on 2 cores
//	go run ./bench -quick               # reduced sizes, under ~90 s
//	go run ./bench -json /tmp/bench.json
//
// Every process it starts (the echo upstream, wschaos, nginx, toxiproxy) is
// stopped before it exits, also on SIGINT or SIGTERM. See bench/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// options are the harness's flags.
type options struct {
	quick    bool
	jsonPath string
	rounds   int
	targets  string
	loads    string
	timeout  time.Duration

	srcIPs  int
	dialers int
	warmup  time.Duration
	settle  time.Duration

	latConns    int
	latSize     int
	latDuration time.Duration
	latMax      int
	latSlice    time.Duration
	latSettle   time.Duration

	tputConns    int
	tputSize     int
	tputWindow   int
	tputDuration time.Duration

	idleSessions int

	connCount    int
	connDialers  int
	connDuration time.Duration
	connSlice    time.Duration
	connSettle   time.Duration

	faultAfter  int
	faultEvery  int
	everyPeriod time.Duration

	proxyCPUs string

	wschaosLogLevel  string
	wschaosLoops     int
	nginxBin         string
	nginxWorkers     string
	nginxAccessLog   bool
	toxiproxyVersion string
	buildTimeout     time.Duration

	// Hidden: the echo upstream runs in a child process of its own.
	echoChild bool
	echoPorts int
}

// quickSizes are the sizes -quick uses for every size flag not given
// explicitly on the command line.
var quickSizes = map[string]string{
	"timeout":       "5m",
	"warmup":        "300ms",
	"settle":        "1s",
	"dial-workers":  "50",
	"lat-conns":     "8",
	"lat-duration":  "1500ms",
	"lat-max":       "200000",
	"lat-slice":     "300ms",
	"lat-settle":    "100ms",
	"tput-conns":    "8",
	"tput-duration": "1500ms",
	"idle-sessions": "200",
	"conn-count":    "1000",
	"conn-dialers":  "50",
	"conn-duration": "3s",
	"conn-slice":    "300ms",
	"conn-settle":   "100ms",
	"fault-after":   "200",
	"fault-every":   "200",
	"every-period":  "1s",
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.BoolVar(&o.quick, "quick", false, "reduced sizes (CI): proves the harness end to end in under ~90 s; figures are not meaningful")
	fs.StringVar(&o.jsonPath, "json", "", "also write the results as JSON to this file")
	fs.StringVar(&o.targets, "targets", strings.Join(allTargets, ","), "comma-separated targets to run")
	fs.StringVar(&o.loads, "workloads", strings.Join(allWorkloads, ","), "comma-separated workloads to run")
	fs.DurationVar(&o.timeout, "timeout", 20*time.Minute, "bound on the whole run")
	fs.IntVar(&o.rounds, "rounds", 1, "run the targets' workloads this many times, the targets' order reversed every other round; each figure, the fault workload's too, is then the median of its rounds")

	fs.IntVar(&o.srcIPs, "src-ips", 8, "client source addresses 127.0.0.2 ... 127.0.0.(1+N)")
	fs.IntVar(&o.dialers, "dial-workers", 200, "concurrent dialers opening idle and fault sessions")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "latency, throughput and connect: time run but not measured")
	fs.DurationVar(&o.settle, "settle", 5*time.Second, "idle memory: wait before each RSS reading")

	fs.IntVar(&o.latConns, "lat-conns", 64, "latency: connections")
	fs.IntVar(&o.latSize, "lat-size", 1024, "latency: text message size in bytes")
	fs.DurationVar(&o.latDuration, "lat-duration", 8*time.Second, "latency: measured time")
	fs.IntVar(&o.latMax, "lat-max", 2000000, "latency: at most this many round trips in all")
	fs.DurationVar(&o.latSlice, "lat-slice", time.Second, "latency: every target up at once and measured in turn, in windows this long, each after -lat-settle; 0: each target's latency in its turn, with its other workloads")
	fs.DurationVar(&o.latSettle, "lat-settle", 200*time.Millisecond, "latency: how long a slice's clients run before its window opens")

	fs.IntVar(&o.tputConns, "tput-conns", 8, "throughput: connections")
	fs.IntVar(&o.tputSize, "tput-size", 64<<10, "throughput: binary message size in bytes")
	fs.IntVar(&o.tputWindow, "tput-window", 4, "throughput: messages in flight per connection")
	fs.DurationVar(&o.tputDuration, "tput-duration", 8*time.Second, "throughput: measured time")

	fs.IntVar(&o.idleSessions, "idle-sessions", 8000, "idle memory: sessions held open")

	fs.IntVar(&o.connCount, "conn-count", 20000, "connect rate: sessions to open (at most)")
	fs.IntVar(&o.connDialers, "conn-dialers", 200, "connect rate: concurrent dialers")
	fs.DurationVar(&o.connDuration, "conn-duration", 20*time.Second, "connect rate: at most this long")
	fs.DurationVar(&o.connSlice, "conn-slice", 500*time.Millisecond, "connect rate: every target up at once and measured in turn, in windows this long, each after -conn-settle; 0: each target's connect in its turn, with its other workloads")
	fs.DurationVar(&o.connSettle, "conn-settle", 200*time.Millisecond, "connect rate: how long a slice's dialers run before its window opens")

	fs.IntVar(&o.faultAfter, "fault-after", 1000, "fault precision: sessions closed by an after = \"1s\" rule")
	fs.IntVar(&o.faultEvery, "fault-every", 8000, "fault precision: sessions closed at once by an every rule's tick")
	fs.DurationVar(&o.everyPeriod, "every-period", 2*time.Second, "fault precision: the every rule's period")

	fs.StringVar(&o.proxyCPUs, "proxy-cpus", "", "run the proxies on these CPUs (a list: 1, 2-3, 0,4-7) and the harness (clients, echo upstream) on the others; default: every process on every CPU")

	fs.StringVar(&o.wschaosLogLevel, "wschaos-log", "info", "wschaos --log-level (its default is info: two lines per session)")
	fs.IntVar(&o.wschaosLoops, "wschaos-loops", -1, "wschaos's [proxy] loops: event loops for plain sessions (0: none; -1: its default, one per CPU)")
	fs.StringVar(&o.nginxBin, "nginx", "", "nginx binary (default: nginx on PATH, or /usr/sbin/nginx)")
	fs.StringVar(&o.nginxWorkers, "nginx-workers", "auto", "nginx worker_processes (auto: one per CPU)")
	fs.BoolVar(&o.nginxAccessLog, "nginx-access-log", false, "nginx writes an access log line per session, as Debian's configuration has it, to a file in its prefix (default: access_log off)")
	fs.StringVar(&o.toxiproxyVersion, "toxiproxy", "v2.5.0", "version of github.com/Shopify/toxiproxy/v2 to build; empty skips it")
	fs.DurationVar(&o.buildTimeout, "build-timeout", 5*time.Minute, "bound on building wschaos and toxiproxy")

	fs.BoolVar(&o.echoChild, "echo-child", false, "internal: run as the echo upstream process")
	fs.IntVar(&o.echoPorts, "echo-ports", 1, "internal: listening ports of the echo upstream")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, v := range quickSizes {
			if !set[name] {
				if err := fs.Set(name, v); err != nil {
					return nil, fmt.Errorf("quick size %s=%s: %w", name, v, err)
				}
			}
		}
	}
	switch {
	case o.rounds < 1:
		return nil, errors.New("-rounds must be at least 1")
	case o.srcIPs < 1 || o.srcIPs > 250:
		return nil, errors.New("-src-ips must be 1 to 250")
	case o.latConns < 1, o.tputConns < 1, o.dialers < 1, o.connDialers < 1, o.tputWindow < 1:
		return nil, errors.New("connection and dialer counts must be at least 1")
	case o.latSize < 1, o.tputSize < 1:
		return nil, errors.New("message sizes must be at least 1 byte")
	case o.connSlice < 0, o.connSettle < 0, o.latSlice < 0, o.latSettle < 0:
		return nil, errors.New("-conn-slice, -conn-settle, -lat-slice and -lat-settle must not be negative")
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if o.echoChild {
		runEchoChild(o.echoPorts)
		return
	}
	os.Exit(runHarness(o))
}

// runHarness runs every selected target and workload and prints the
// report. It returns the exit code: 1 if a figure of a present component
// could not be measured.
func runHarness(o *options) int {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sig
		logf("%v: stopping", s)
		cancel()
		<-sig
		logf("second signal: killing every process started")
		stopAll()
		os.Exit(130)
	}()
	defer stopAll()

	nofile := raiseNofile()
	env, err := newEnv(ctx, o, nofile)
	if env != nil {
		defer env.close()
	}
	if err != nil {
		logf("setup failed: %v", err)
		return 1
	}

	rep := &report{Machine: machineInfo(), Options: o.summary(nofile)}
	targets := env.selectedTargets()
	for round := 1; round <= o.rounds && ctx.Err() == nil; round++ {
		if o.rounds > 1 {
			logf("round %d of %d", round, o.rounds)
		}
		for _, t := range targets {
			if ctx.Err() != nil {
				break
			}
			runTarget(ctx, env, t, rep)
		}
		if loads := env.interleavedLoads(); len(loads) > 0 && ctx.Err() == nil {
			interleaved(ctx, env, targets, rep, loads)
		}
		// The fault figures are wschaos's alone and absolute, so they move
		// with the machine's load as much as any: each is the median of
		// the rounds too.
		if env.wants("faults") && ctx.Err() == nil {
			runFaults(ctx, env, rep)
		}
		// Whichever target runs first or last in a round does so only
		// every other round.
		slices.Reverse(targets)
	}
	rep.Machine.Components = env.components()
	if env.cpus != nil {
		rep.Machine.CPUSplit = env.cpus.String()
	}
	rep.Elapsed = time.Since(start).Round(time.Second).String()
	if ctx.Err() != nil {
		rep.Interrupted = true
	}
	rep.computeRatios()

	rep.writeMarkdown(os.Stdout, env.command())
	if o.jsonPath != "" {
		if err := rep.writeJSON(o.jsonPath); err != nil {
			logf("write %s: %v", o.jsonPath, err)
			return 1
		}
	}
	if rep.Interrupted || rep.failed() {
		return 1
	}
	return 0
}

// logf reports progress on stderr, so that stdout holds only the report.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
}

// moduleRoot finds the wschaos module's directory from the working
// directory up.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/wschaos/wschaos\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run the harness from inside the wschaos module (go run ./bench)")
		}
		dir = parent
	}
}
