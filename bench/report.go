//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
)

const (
	statusOK      = "ok"
	statusMissing = "missing" // the component is not installed
	statusNA      = "n/a"     // the figure does not apply to the target
	statusError   = "error"   // the harness could not measure it
)

// figure is one measured quantity of a workload.
type figure struct {
	workload, name, unit, better string
}

// figures are every figure, in the report's order.
var figures = []figure{
	{"latency", "p50 round trip", "µs", "lower"},
	{"latency", "p99 round trip", "µs", "lower"},
	{"latency", "p99.9 round trip", "µs", "lower"},
	{"latency", "round trips/s", "1/s", "higher"},
	{"latency", "proxy CPU per round trip", "µs", "lower"},
	{"latency", "harness CPU per round trip", "µs", "lower"},
	{"latency", "proxy CPU ÷ harness CPU", "", "lower"},
	{"throughput", "echo throughput", "MB/s", "higher"},
	{"idle", "RSS per idle session", "KiB", "lower"},
	{"idle", "RSS growth", "MiB", "lower"},
	{"connect", "new sessions/s", "1/s", "higher"},
	{"connect", "p50 connect to first echo", "ms", "lower"},
	{"connect", "p99 connect to first echo", "ms", "lower"},
	{"connect", "proxy CPU per session", "µs", "lower"},
	{"connect", "harness CPU per session", "µs", "lower"},
	{"connect", "proxy CPU ÷ harness CPU", "", "lower"},
	{"faults", "after 1s: close error p50", "ms", "closer to 0"},
	{"faults", "after 1s: close error p99", "ms", "closer to 0"},
	{"faults", "after 1s: sessions closed", "", ""},
	{"faults", "every: first→last close spread", "ms", "lower"},
	{"faults", "every: first→last read by the clients", "ms", "lower"},
	{"faults", "every: p50 after first close", "ms", "lower"},
	{"faults", "every: p99 after first close", "ms", "lower"},
	{"faults", "every: first close − (SIGHUP + period)", "ms", "lower"},
	{"faults", "every: sessions closed", "", ""},
	{"faults", "every: tick's work in wschaos", "ms", "lower"},
}

// result is one figure for one target.
type result struct {
	Workload  string   `json:"workload"`
	Figure    string   `json:"figure"`
	Unit      string   `json:"unit,omitempty"`
	Better    string   `json:"better,omitempty"`
	Target    string   `json:"target"`
	Status    string   `json:"status"`
	Value     *float64 `json:"value,omitempty"`
	VsDirect  *float64 `json:"vs_direct,omitempty"`
	VsWschaos *float64 `json:"vs_wschaos,omitempty"`
	Note      string   `json:"note,omitempty"`
	// With -rounds: every round's value, in the order measured (Value is
	// their median), and how many rounds could not measure the figure.
	Samples      []float64 `json:"samples,omitempty"`
	FailedRounds int       `json:"failed_rounds,omitempty"`
	// With -rounds: each round's value over wschaos's in the same round,
	// when every round of both measured the figure. A round runs every
	// target under much the same load, so these ratios move less than
	// the values do from round to round.
	VsWschaosByRound []float64 `json:"vs_wschaos_by_round,omitempty"`
}

// machine describes where the figures were measured.
type machine struct {
	CPUs       int               `json:"cpus"`
	CPUModel   string            `json:"cpu_model"`
	Go         string            `json:"go"`
	Kernel     string            `json:"kernel"`
	MemTotal   string            `json:"mem_total"`
	LoadAvg    string            `json:"loadavg_at_start"`
	Components map[string]string `json:"components"`
	// CPUSplit says where the proxies and the harness ran, with
	// -proxy-cpus; empty: each on every CPU.
	CPUSplit string `json:"cpu_split,omitempty"`
}

type report struct {
	Machine     machine        `json:"machine"`
	Command     string         `json:"command"`
	Options     map[string]any `json:"options"`
	Elapsed     string         `json:"elapsed"`
	Interrupted bool           `json:"interrupted,omitempty"`
	Results     []result       `json:"results"`

	mu sync.Mutex
}

func figureOf(workload, name string) figure {
	for _, f := range figures {
		if f.workload == workload && f.name == name {
			return f
		}
	}
	panic("unknown figure " + workload + "/" + name)
}

// add records a figure's value; a figure measured again (in a later
// round) gets the value as one more sample, and keeps its first note.
func (r *report) add(workload, name, target string, v float64, note string) {
	f := figureOf(workload, name)
	r.mu.Lock()
	defer r.mu.Unlock()
	logf("%s: %s %s: %s %s", target, workload, name, format(v), f.unit)
	if x := r.find(workload, name, target); x != nil {
		x.Samples = append(x.Samples, v)
		return
	}
	for i := range r.Results {
		if x := &r.Results[i]; x.Workload == workload && x.Figure == name && x.Target == target && x.Status == statusError {
			// An earlier round failed where this one measured.
			*x = result{Workload: workload, Figure: name, Unit: f.unit, Better: f.better, Target: target,
				Status: statusOK, Value: &v, Note: joinNote(note, roundFailed(x.Note)),
				Samples: []float64{v}, FailedRounds: 1}
			return
		}
	}
	r.Results = append(r.Results, result{Workload: workload, Figure: name, Unit: f.unit, Better: f.better,
		Target: target, Status: statusOK, Value: &v, Note: note, Samples: []float64{v}})
}

// markAll records every figure of workload for target with a status
// other than ok (missing, n/a, error) and why; the note goes on the
// first only. An error in a later round, for a figure an earlier round
// measured, is counted on that figure (and fails the run).
func (r *report) markAll(workload, target, status, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range figures {
		if f.workload != workload {
			continue
		}
		if x := r.find(workload, f.name, target); x != nil && status == statusError {
			x.FailedRounds++
			x.Note = joinNote(x.Note, roundFailed(why))
			continue
		}
		if r.has(workload, f.name, target) {
			continue
		}
		r.Results = append(r.Results, result{Workload: workload, Figure: f.name, Unit: f.unit, Better: f.better,
			Target: target, Status: status, Note: why})
		why = ""
	}
}

func (r *report) has(workload, name, target string) bool {
	for _, x := range r.Results {
		if x.Workload == workload && x.Figure == name && x.Target == target {
			return true
		}
	}
	return false
}

func (r *report) find(workload, name, target string) *result {
	for i := range r.Results {
		x := &r.Results[i]
		if x.Workload == workload && x.Figure == name && x.Target == target && x.Status == statusOK {
			return x
		}
	}
	return nil
}

// computeRatios sets the value of each figure measured in several rounds
// to their median, then each figure's ratio to the direct connection's
// and to wschaos's (no rules), and sorts the results into the report's
// order.
func (r *report) computeRatios() {
	for i := range r.Results {
		x := &r.Results[i]
		if len(x.Samples) < 2 {
			x.Samples = nil
			continue
		}
		s := slices.Sorted(slices.Values(x.Samples))
		m := median(s)
		x.Value = &m
		x.Note = joinNote(fmt.Sprintf("median of %d rounds, %s to %s", len(s), format(s[0]), format(s[len(s)-1])), x.Note)
	}
	for i := range r.Results {
		x := &r.Results[i]
		if x.Status != statusOK || x.Workload == "faults" {
			continue
		}
		if d := r.find(x.Workload, x.Figure, "direct"); d != nil && *d.Value != 0 {
			v := *x.Value / *d.Value
			x.VsDirect = &v
		}
		if w := r.find(x.Workload, x.Figure, "wschaos"); w != nil && *w.Value != 0 {
			v := *x.Value / *w.Value
			x.VsWschaos = &v
			if x.Target != "wschaos" {
				x.VsWschaosByRound = byRound(x, w)
			}
			if b := x.VsWschaosByRound; b != nil {
				s := slices.Sorted(slices.Values(b))
				x.Note = joinNote(x.Note, fmt.Sprintf("× wschaos by round %s to %s", format(s[0]), format(s[len(s)-1])))
			}
		}
	}
	order := func(x result) (int, int) {
		fi := slices.IndexFunc(figures, func(f figure) bool { return f.workload == x.Workload && f.name == x.Figure })
		return fi, slices.Index(allTargets, x.Target)
	}
	slices.SortStableFunc(r.Results, func(a, b result) int {
		af, at := order(a)
		bf, bt := order(b)
		if af != bf {
			return af - bf
		}
		return at - bt
	})
}

// byRound returns x's value over w's, round by round, if both were
// measured in every round (and w's is never 0); nil otherwise.
func byRound(x, w *result) []float64 {
	if len(x.Samples) < 2 || len(x.Samples) != len(w.Samples) || x.FailedRounds > 0 || w.FailedRounds > 0 {
		return nil
	}
	out := make([]float64, len(x.Samples))
	for i, v := range x.Samples {
		if w.Samples[i] == 0 {
			return nil
		}
		out[i] = v / w.Samples[i]
	}
	return out
}

// median of sorted values: the middle one, or the mean of the two.
func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// roundFailed notes a round that could not measure a figure, and why.
func roundFailed(why string) string {
	if why == "" {
		return "a round failed"
	}
	return "a round failed: " + why
}

// joinNote joins two notes with "; ", either of which may be empty.
func joinNote(a, b string) string {
	if a == "" || b == "" {
		return a + b
	}
	return a + "; " + b
}

// failed reports whether a figure of a present component is missing
// because the harness could not measure it, in any round.
func (r *report) failed() bool {
	for _, x := range r.Results {
		if x.Status == statusError || x.FailedRounds > 0 {
			return true
		}
	}
	return false
}

func (r *report) writeMarkdown(w io.Writer, command string) {
	r.Command = command
	m := r.Machine
	fmt.Fprintf(w, "machine: %d CPUs, %s, %s RAM, Linux %s, %s, load average %s at start", m.CPUs, m.CPUModel, m.MemTotal, m.Kernel, m.Go, m.LoadAvg)
	if m.CPUSplit != "" {
		fmt.Fprintf(w, "; %s", m.CPUSplit)
	}
	for _, k := range []string{"wschaos", "nginx", "toxiproxy"} {
		if v, ok := m.Components[k]; ok {
			fmt.Fprintf(w, "; %s %s", k, v)
		}
	}
	fmt.Fprintf(w, "\n\ncommand: `%s` (%s", command, r.Elapsed)
	if r.Interrupted {
		fmt.Fprint(w, ", INTERRUPTED: figures are partial")
	}
	fmt.Fprint(w, ")\n\n")
	fmt.Fprintln(w, "| workload | figure | target | value | × direct | × wschaos | notes |")
	fmt.Fprintln(w, "|---|---|---|--:|--:|--:|---|")
	for _, x := range r.Results {
		fig := x.Figure
		if x.Unit != "" {
			fig += " (" + x.Unit + ")"
		}
		val := x.Status
		if x.Status == statusOK {
			val = format(*x.Value)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", x.Workload, fig, x.Target, val,
			ratio(x.VsDirect), ratio(x.VsWschaos), strings.ReplaceAll(x.Note, "|", "/"))
	}
}

func (r *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// format prints a figure with three significant digits or so.
func format(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1000 || v == math.Trunc(v):
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func ratio(p *float64) string {
	if p == nil {
		return "—"
	}
	return fmt.Sprintf("%.2f×", *p)
}

// machineInfo reads the CPU, kernel and memory from /proc.
func machineInfo() machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), CPUModel: "unknown", Kernel: "unknown", MemTotal: "?"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err == nil {
			m.MemTotal = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	return m
}

// summary is the sizes the run used, for the JSON report.
func (o *options) summary(nofile uint64) map[string]any {
	return map[string]any{
		"quick": o.quick, "rlimit_nofile": nofile, "src_ips": o.srcIPs, "dial_workers": o.dialers,
		"warmup": o.warmup.String(), "settle": o.settle.String(),
		"lat_conns": o.latConns, "lat_size": o.latSize, "lat_duration": o.latDuration.String(), "lat_max": o.latMax,
		"tput_conns": o.tputConns, "tput_size": o.tputSize, "tput_window": o.tputWindow, "tput_duration": o.tputDuration.String(),
		"idle_sessions": o.idleSessions,
		"conn_count":    o.connCount, "conn_dialers": o.connDialers, "conn_duration": o.connDuration.String(),
		"fault_after": o.faultAfter, "fault_every": o.faultEvery, "every_period": o.everyPeriod.String(),
		"wschaos_log_level": o.wschaosLogLevel, "wschaos_loops": o.wschaosLoops, "nginx_workers": o.nginxWorkers, "nginx_access_log": o.nginxAccessLog, "toxiproxy": o.toxiproxyVersion,
		"proxy_cpus": o.proxyCPUs,
	}
}
