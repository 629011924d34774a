package main

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// lineWith returns the JSON line zap writes for an entry at t, its time
// encoded by te.
func lineWith(t testing.TB, te zapcore.TimeEncoder, at time.Time) string {
	t.Helper()
	cfg := zap.NewProductionEncoderConfig()
	cfg.EncodeTime = te
	buf, err := zapcore.NewJSONEncoder(cfg).EncodeEntry(zapcore.Entry{Time: at, Message: "m"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Free()
	return buf.String()
}

func TestTimeCache(t *testing.T) {
	base := time.Date(2026, 11, 26, 12, 34, 56, 789_000_000, time.UTC)
	east := time.FixedZone("east", 5*3600+30*60)
	west := time.FixedZone("west", -8*3600)
	for _, tt := range []struct {
		name  string
		times []time.Time // encoded in order, by one cache
	}{
		{"one", []time.Time{base}},
		{"same millisecond", []time.Time{base, base.Add(999_999 * time.Nanosecond), base.Add(1)}},
		{"next millisecond", []time.Time{base, base.Add(time.Millisecond), base}},
		{"next second", []time.Time{base.Add(211 * time.Millisecond), base.Add(212 * time.Millisecond)}},
		{"same instant, other zones", []time.Time{base, base.In(east), base.In(west), base.In(time.Local), base}},
		{"before 1970", []time.Time{time.Date(1969, 12, 31, 23, 59, 59, 999_500_000, time.UTC), time.Date(1969, 12, 31, 23, 59, 59, 999_900_000, time.UTC), time.Unix(0, 0).UTC()}},
		{"monotonic reading", []time.Time{time.Now(), time.Now().Round(0)}},
		{"zero", []time.Time{{}, {}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := &timeCache{}
			for _, at := range tt.times {
				if got, want := lineWith(t, c.encode, at), lineWith(t, zapcore.ISO8601TimeEncoder, at); got != want {
					t.Errorf("%v: got %s; want %s", at, got, want)
				}
			}
		})
	}
}

// FuzzTimeCache holds the cache to zapcore.ISO8601TimeEncoder over two
// instants, encoded one after the other, each in a zone of its own.
func FuzzTimeCache(f *testing.F) {
	f.Add(int64(1795693850), int64(428438000), int64(1000), 0, 0)
	f.Add(int64(-1), int64(999_999_999), int64(1), 3600, -3600)
	f.Add(int64(0), int64(0), int64(0), 19800, 19800)
	f.Fuzz(func(t *testing.T, sec, nsec, stepNs int64, off1, off2 int) {
		// Years zap's layout writes with four digits.
		if sec < -62135596800 || sec > 253402300799-86400 || off1%60 != 0 || off2%60 != 0 ||
			off1 < -86340 || off1 > 86340 || off2 < -86340 || off2 > 86340 {
			t.Skip()
		}
		a := time.Unix(sec, nsec).In(time.FixedZone("a", off1))
		b := a.Add(time.Duration(stepNs % int64(time.Hour))).In(time.FixedZone("b", off2))
		c := &timeCache{}
		for _, at := range []time.Time{a, b, a} {
			if got, want := lineWith(t, c.encode, at), lineWith(t, zapcore.ISO8601TimeEncoder, at); got != want {
				t.Fatalf("%v: got %s; want %s", at, got, want)
			}
		}
	})
}

// BenchmarkEncodeTime encodes a line's time for lines 2 µs apart, a
// connect storm's pace.
func BenchmarkEncodeTime(b *testing.B) {
	cfg := zap.NewProductionEncoderConfig()
	start := time.Date(2026, 11, 26, 12, 0, 0, 0, time.Local)
	for _, bb := range []struct {
		name string
		te   zapcore.TimeEncoder
	}{
		{"iso8601", zapcore.ISO8601TimeEncoder},
		{"cache", (&timeCache{}).encode},
	} {
		b.Run(bb.name, func(b *testing.B) {
			cfg.EncodeTime = bb.te
			enc := zapcore.NewJSONEncoder(cfg)
			b.ReportAllocs()
			for i := range b.N {
				buf, _ := enc.EncodeEntry(zapcore.Entry{Time: start.Add(time.Duration(i) * 2 * time.Microsecond), Message: "m"}, nil)
				buf.Free()
			}
		})
	}
}
