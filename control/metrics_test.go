package control_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	gorilla "github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/wschaos/wschaos/control"
	"github.com/wschaos/wschaos/proxy"
	"github.com/wschaos/wschaos/rules"
)

// scrape reads m's exposition with the Prometheus text parser.
func scrape(t *testing.T, m *control.Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: got status %d; want 200", rec.Code)
	}
	return parseMetrics(t, rec.Body.Bytes())
}

func parseMetrics(t *testing.T, text []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("parse metrics: got %v; want nil\n%s", err, text)
	}
	return fams
}

// series names one series: a metric and its labels in pairs.
type series struct {
	name   string
	labels []string
}

func (s series) String() string {
	var b strings.Builder
	b.WriteString(s.name)
	if len(s.labels) > 0 {
		b.WriteByte('{')
		for i := 0; i+1 < len(s.labels); i += 2 {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%s=%q", s.labels[i], s.labels[i+1])
		}
		b.WriteByte('}')
	}
	return b.String()
}

// labelsOf returns m's labels in pairs, in the order the parser gives them
// (sorted by name).
func labelsOf(m *dto.Metric) []string {
	var out []string
	for _, lp := range m.GetLabel() {
		out = append(out, lp.GetName(), lp.GetValue())
	}
	return out
}

// value returns the series' value: a counter's or a gauge's, or a
// histogram's sample count. ok is false if there is no such series.
func value(fams map[string]*dto.MetricFamily, s series) (v float64, ok bool) {
	name := strings.TrimSuffix(s.name, "_count")
	fam := fams[s.name]
	if fam == nil {
		fam = fams[name]
	}
	if fam == nil {
		return 0, false
	}
	want := slices.Clone(s.labels)
	for _, m := range fam.GetMetric() {
		if !slices.Equal(labelsOf(m), want) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// checkSeries checks the value of each series in want; a family listed in
// exact must have no series besides those in want.
func checkSeries(t *testing.T, fams map[string]*dto.MetricFamily, want map[string]float64, exact ...string) {
	t.Helper()
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parsed := map[string]series{}
	for _, k := range keys {
		s := parseSeries(t, k)
		parsed[k] = s
		got, ok := value(fams, s)
		if !ok {
			t.Errorf("%s: got no such series; want %v", k, want[k])
			continue
		}
		if got != want[k] {
			t.Errorf("%s: got %v; want %v", k, got, want[k])
		}
	}
	for _, name := range exact {
		for _, m := range fams[name].GetMetric() {
			s := series{name: name, labels: labelsOf(m)}
			if _, ok := want[s.String()]; !ok {
				t.Errorf("%s: got a series %s; want none besides those listed", name, s)
			}
		}
	}
}

// parseSeries reads `name{a="x",b="y"}`, labels sorted by name.
func parseSeries(t *testing.T, s string) series {
	t.Helper()
	name, rest, ok := strings.Cut(s, "{")
	out := series{name: name}
	if !ok {
		return out
	}
	for pair := range strings.SplitSeq(strings.TrimSuffix(rest, "}"), ",") {
		k, v, ok := strings.Cut(pair, "=")
		uq, err := strconv.Unquote(v)
		if !ok || err != nil {
			t.Fatalf("series %q: bad label %q", s, pair)
		}
		out.labels = append(out.labels, k, uq)
	}
	if out.String() != s {
		t.Fatalf("series %q: got it read as %s; want labels sorted by name", s, out)
	}
	return out
}

// TestMetricsEvents feeds events and totals by hand and checks every
// series.
func TestMetricsEvents(t *testing.T) {
	m := control.NewMetrics(func() proxy.Stats {
		return proxy.Stats{
			Active: 2, Total: 7,
			Client2Upstream: proxy.Traffic{Frames: 11, Messages: 10, Bytes: 1000},
			Upstream2Client: proxy.Traffic{Frames: 21, Messages: 20, Bytes: 2000},
			AcceptPauses:    3,
		}
	})
	for _, e := range []proxy.Event{
		{Kind: proxy.EventOpened, Duration: 2 * time.Millisecond},
		{Kind: proxy.EventOpened, Duration: 4 * time.Millisecond},
		{Kind: proxy.EventFault, Rule: "r1", Action: "close", Code: 1012},
		{Kind: proxy.EventFault, Rule: "r1", Action: "close", Code: 1012},
		{Kind: proxy.EventFault, Rule: "manual", Action: "reset"},
		{Kind: proxy.EventFault, Rule: "manual", Action: "close", Code: 1005},
		{Kind: proxy.EventRefused, Refusal: proxy.RefusedUnreachable, Status: 502},
		{Kind: proxy.EventRefused, Refusal: proxy.RefusedUnreachable, Status: 502},
		{Kind: proxy.EventRefused, Refusal: proxy.RefusedTimeout, Status: 502},
		{Kind: proxy.EventRefused, Refusal: proxy.RefusedUpstream, Status: 403},
		{Kind: proxy.EventRefused, Refusal: proxy.RefusedRule, Status: 503},
		{Kind: proxy.EventRefused, Refusal: proxy.RefusedBadRequest, Status: 400},
		{Kind: proxy.EventClosed, ClientCode: 1000, UpstreamCode: 1000},
		{Kind: proxy.EventClosed, ClientCode: 1005},
		{Kind: proxy.EventClosed, UpstreamCode: 1001},
		{Kind: proxy.EventClosed}, // no close frames: nothing counted
	} {
		m.Event(e)
	}
	fams := scrape(t, m)
	checkSeries(t, fams, map[string]float64{
		`wschaos_sessions_active`:                                        2,
		`wschaos_sessions_total`:                                         7,
		`wschaos_accept_pauses_total`:                                    3,
		`wschaos_frames_total{direction="client"}`:                       11,
		`wschaos_frames_total{direction="upstream"}`:                     21,
		`wschaos_messages_total{direction="client"}`:                     10,
		`wschaos_messages_total{direction="upstream"}`:                   20,
		`wschaos_bytes_total{direction="client"}`:                        1000,
		`wschaos_bytes_total{direction="upstream"}`:                      2000,
		`wschaos_handshake_seconds_count`:                                2,
		`wschaos_faults_total{action="close",code="1012",rule="r1"}`:     2,
		`wschaos_faults_total{action="reset",code="0",rule="manual"}`:    1,
		`wschaos_faults_total{action="close",code="1005",rule="manual"}`: 1,
		`wschaos_refused_total{refusal="unreachable"}`:                   2,
		`wschaos_refused_total{refusal="timeout"}`:                       1,
		`wschaos_refused_total{refusal="upstream"}`:                      1,
		`wschaos_refused_total{refusal="rule"}`:                          1,
		`wschaos_refused_total{refusal="bad_request"}`:                   1,
		`wschaos_upstream_dial_failures_total{reason="unreachable"}`:     2,
		`wschaos_upstream_dial_failures_total{reason="timeout"}`:         1,
		`wschaos_upstream_dial_failures_total{reason="upstream"}`:        1,
		`wschaos_close_codes_total{code="1000",side="client"}`:           1,
		`wschaos_close_codes_total{code="1005",side="client"}`:           1,
		`wschaos_close_codes_total{code="1000",side="upstream"}`:         1,
		`wschaos_close_codes_total{code="1001",side="upstream"}`:         1,
	}, "wschaos_faults_total", "wschaos_refused_total", "wschaos_upstream_dial_failures_total", "wschaos_close_codes_total")

	h := fams["wschaos_handshake_seconds"].GetMetric()[0].GetHistogram()
	if got, want := h.GetSampleSum(), 0.006; got < want-1e-9 || got > want+1e-9 {
		t.Errorf("wschaos_handshake_seconds_sum: got %v; want %v", got, want)
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if fams[name] == nil {
			t.Errorf("%s: got none; want the runtime's metrics too", name)
		}
	}
}

// TestMetricsScrape drives a real proxy through a scripted run and checks
// the exact counts a scrape of /metrics gives.
func TestMetricsScrape(t *testing.T) {
	const (
		n       = 4          // messages each way, per session
		payload = "12345678" // every message
	)
	r := newRig(t, rigOptions{specs: []rules.Spec{{
		Name: "count-close", Match: rules.MatchSpec{Path: "/rule"},
		AfterMessages: new(int64(n)), Direction: "upstream",
		Action: "close", Code: "try_again_later", Reason: new("counted"),
	}}})
	scrapeAPI := func(t *testing.T) map[string]*dto.MetricFamily {
		t.Helper()
		resp := r.call(t, http.MethodGet, "/metrics", "")
		if resp.status != http.StatusOK {
			t.Fatalf("GET /metrics: got status %d; want 200", resp.status)
		}
		return parseMetrics(t, resp.body)
	}

	byRule, manual, byClient := r.dial(t, "/rule"), r.dial(t, "/manual"), r.dial(t, "/client")
	for _, c := range []*gorilla.Conn{manual, byClient} {
		for range n {
			roundTrip(t, c, payload)
		}
	}
	// Open sessions are counted as they go.
	checkSeries(t, scrapeAPI(t), map[string]float64{
		`wschaos_sessions_active`:                      3,
		`wschaos_sessions_total`:                       3,
		`wschaos_frames_total{direction="client"}`:     2 * n,
		`wschaos_frames_total{direction="upstream"}`:   2 * n,
		`wschaos_messages_total{direction="client"}`:   2 * n,
		`wschaos_messages_total{direction="upstream"}`: 2 * n,
		`wschaos_bytes_total{direction="client"}`:      2 * n * float64(len(payload)),
		`wschaos_bytes_total{direction="upstream"}`:    2 * n * float64(len(payload)),
		`wschaos_handshake_seconds_count`:              3,
	})

	// The rule closes the first after the n-th message from the upstream.
	for range n {
		roundTrip(t, byRule, payload)
	}
	expectClose(t, byRule, 1013, "counted")
	// The second is closed by hand.
	id := r.sessionOf(t, manual)
	r.postJSON(t, "/api/sessions/"+strconv.FormatUint(id, 10)+"/close", `{"code": 1012, "reason": "restart"}`, &struct{}{})
	expectClose(t, manual, 1012, "restart")
	// The client closes the third; the upstream answers with its code.
	if err := byClient.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(1000, "bye"), time.Now().Add(rigTimeout)); err != nil {
		t.Fatalf("client close: got %v; want nil", err)
	}
	expectClose(t, byClient, 1000, "")
	// A session's end is counted before it leaves the open ones.
	waitUntil(t, "no session open", func() bool { return r.proxy.Stats().Active == 0 })

	// Data frames each way, and the close frames of the client's close
	// handshake; the answers to the proxy's own close frames are not
	// relayed, so not counted.
	frames, msgs, data := 3*n, 3*n, 3*n*len(payload)
	checkSeries(t, scrapeAPI(t), map[string]float64{
		`wschaos_sessions_active`:                                             0,
		`wschaos_sessions_total`:                                              3,
		`wschaos_frames_total{direction="client"}`:                            float64(frames + 1),
		`wschaos_frames_total{direction="upstream"}`:                          float64(frames + 1),
		`wschaos_messages_total{direction="client"}`:                          float64(msgs),
		`wschaos_messages_total{direction="upstream"}`:                        float64(msgs),
		`wschaos_bytes_total{direction="client"}`:                             float64(data + 2 + len("bye")),
		`wschaos_bytes_total{direction="upstream"}`:                           float64(data + 2),
		`wschaos_faults_total{action="close",code="1013",rule="count-close"}`: 1,
		`wschaos_faults_total{action="close",code="1012",rule="manual"}`:      1,
		`wschaos_close_codes_total{code="1013",side="client"}`:                1,
		`wschaos_close_codes_total{code="1012",side="client"}`:                1,
		`wschaos_close_codes_total{code="1000",side="client"}`:                1,
		`wschaos_close_codes_total{code="1001",side="upstream"}`:              2,
		`wschaos_close_codes_total{code="1000",side="upstream"}`:              1,
		`wschaos_handshake_seconds_count`:                                     3,
	}, "wschaos_faults_total", "wschaos_close_codes_total", "wschaos_refused_total", "wschaos_upstream_dial_failures_total")

	t.Run("upstream down", func(t *testing.T) {
		// A second proxy, with its own metrics, in front of a port nobody
		// listens on.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: got %v; want nil", err)
		}
		down := &url.URL{Scheme: "ws", Host: ln.Addr().String()}
		ln.Close()
		events := control.NewEventLog(16)
		p := &proxy.Proxy{
			Upstream:         down,
			HandshakeTimeout: rigTimeout,
			Logger:           zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)),
		}
		m := control.NewMetrics(p.Stats)
		p.Events = proxy.Sinks{events, m}
		wsURL := serveProxy(t, p)

		ctx, cancel := context.WithTimeout(context.Background(), rigTimeout)
		defer cancel()
		c, resp, err := (&gorilla.Dialer{HandshakeTimeout: rigTimeout}).DialContext(ctx, wsURL+"/down", nil)
		if err == nil {
			c.Close()
			t.Fatalf("dial through a proxy whose upstream is down: got a session; want refused")
		}
		if !errors.Is(err, gorilla.ErrBadHandshake) || resp == nil || resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("dial: got %v (response %v); want a bad handshake with 502", err, resp)
		}
		resp.Body.Close()
		// The refusal is recorded once the client has its answer.
		waitUntil(t, "refusal counted", func() bool {
			_, ok := value(scrape(t, m), series{name: "wschaos_refused_total", labels: []string{"refusal", "unreachable"}})
			return ok
		})
		checkSeries(t, scrape(t, m), map[string]float64{
			`wschaos_refused_total{refusal="unreachable"}`:               1,
			`wschaos_upstream_dial_failures_total{reason="unreachable"}`: 1,
			`wschaos_sessions_total`:                                     0,
			`wschaos_sessions_active`:                                    0,
			`wschaos_handshake_seconds_count`:                            0,
			`wschaos_frames_total{direction="client"}`:                   0,
		}, "wschaos_refused_total", "wschaos_upstream_dial_failures_total", "wschaos_faults_total", "wschaos_close_codes_total")
		last := events.Last()
		if len(last) != 1 || last[0].Kind != proxy.EventRefused || last[0].Status != http.StatusBadGateway || last[0].Path != "/down" {
			t.Errorf("events: got %+v; want one refused, 502, /down", last)
		}
	})
}
