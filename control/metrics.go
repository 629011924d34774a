package control

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/wschaos/wschaos/proxy"
)

// Metrics exposes a proxy in Prometheus' text format. Session and traffic
// totals are read from the proxy at scrape time, so that relaying a frame
// costs nothing here; faults, refusals, handshakes and close codes are
// counted from the proxy's events (Metrics is a proxy.EventSink).
type Metrics struct {
	reg        *prometheus.Registry
	faults     *prometheus.CounterVec
	dialFails  *prometheus.CounterVec
	refused    *prometheus.CounterVec
	handshake  prometheus.Histogram
	closeCodes *prometheus.CounterVec
}

// NewMetrics returns metrics that read totals with stats.
func NewMetrics(stats func() proxy.Stats) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		faults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wschaos_faults_total",
			Help: "Faults fired, by rule (or manual), action and close code (0: none).",
		}, []string{"rule", "action", "code"}),
		dialFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wschaos_upstream_dial_failures_total",
			Help: "Upgrade attempts the upstream failed, by reason: unreachable, timeout or upstream (a non-101 answer).",
		}, []string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wschaos_refused_total",
			Help: "Upgrade attempts that did not become a session, by the step that refused them.",
		}, []string{"refusal"}),
		handshake: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wschaos_handshake_seconds",
			Help:    "Time from a client's request head to its 101, upstream dial and handshake included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		closeCodes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wschaos_close_codes_total",
			Help: "Close codes seen in close frames, by the side that sent them (1005: an empty close frame).",
		}, []string{"side", "code"}),
	}
	m.reg.MustRegister(m.faults, m.dialFails, m.refused, m.handshake, m.closeCodes,
		&statsCollector{stats: stats},
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// Event counts what e records.
func (m *Metrics) Event(e proxy.Event) {
	switch e.Kind {
	case proxy.EventFault:
		m.faults.WithLabelValues(e.Rule, e.Action, strconv.Itoa(e.Code)).Inc()
	case proxy.EventRefused:
		m.refused.WithLabelValues(e.Refusal).Inc()
		switch e.Refusal {
		case proxy.RefusedUnreachable, proxy.RefusedTimeout, proxy.RefusedUpstream:
			m.dialFails.WithLabelValues(e.Refusal).Inc()
		}
	case proxy.EventOpened:
		m.handshake.Observe(e.Duration.Seconds())
	case proxy.EventClosed:
		if e.ClientCode != 0 {
			m.closeCodes.WithLabelValues("client", strconv.Itoa(e.ClientCode)).Inc()
		}
		if e.UpstreamCode != 0 {
			m.closeCodes.WithLabelValues("upstream", strconv.Itoa(e.UpstreamCode)).Inc()
		}
	}
}

// Handler serves the metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// statsCollector reads the proxy's totals at scrape time.
type statsCollector struct {
	stats func() proxy.Stats
}

var (
	descActive   = prometheus.NewDesc("wschaos_sessions_active", "Open sessions.", nil, nil)
	descTotal    = prometheus.NewDesc("wschaos_sessions_total", "Sessions opened since start.", nil, nil)
	descFrames   = prometheus.NewDesc("wschaos_frames_total", "Frames relayed, by the side that sent them.", []string{"direction"}, nil)
	descMessages = prometheus.NewDesc("wschaos_messages_total", "Whole data messages relayed, by the side that sent them.", []string{"direction"}, nil)
	descBytes    = prometheus.NewDesc("wschaos_bytes_total", "Payload bytes relayed, by the side that sent them.", []string{"direction"}, nil)
	descPauses   = prometheus.NewDesc("wschaos_accept_pauses_total",
		"Pauses in accepting connections after an accept failed for want of file descriptors or memory.", nil, nil)
)

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descActive, descTotal, descFrames, descMessages, descBytes, descPauses} {
		ch <- d
	}
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(st.Active))
	ch <- prometheus.MustNewConstMetric(descTotal, prometheus.CounterValue, float64(st.Total))
	ch <- prometheus.MustNewConstMetric(descPauses, prometheus.CounterValue, float64(st.AcceptPauses))
	for _, d := range []struct {
		name string
		t    proxy.Traffic
	}{{"client", st.Client2Upstream}, {"upstream", st.Upstream2Client}} {
		ch <- prometheus.MustNewConstMetric(descFrames, prometheus.CounterValue, float64(d.t.Frames), d.name)
		ch <- prometheus.MustNewConstMetric(descMessages, prometheus.CounterValue, float64(d.t.Messages), d.name)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(d.t.Bytes), d.name)
	}
}
