package main

import (
	"sync/atomic"
	"time"

	"go.uber.org/zap/zapcore"
)

// iso8601 is zapcore.ISO8601TimeEncoder's layout.
const iso8601 = "2006-01-02T15:04:05.000Z0700"

// timeCache encodes a log line's time as zapcore.ISO8601TimeEncoder does,
// formatting it once per millisecond: the lines written within the same
// millisecond, as a burst of sessions writes them, reuse the last string.
// time.Time.Format was a quarter of zap's cost per line in a connect run.
type timeCache struct {
	last atomic.Pointer[formattedTime]
}

// formattedTime is a millisecond in a location, formatted.
type formattedTime struct {
	ms  int64
	loc *time.Location
	s   string
}

// encode is a zapcore.TimeEncoder. The layout shows milliseconds,
// truncated, and the zone offset, which is the same for every instant of a
// millisecond in one location: a line's time is the same string whether it
// was formatted for that line or an earlier one.
func (c *timeCache) encode(t time.Time, enc zapcore.PrimitiveArrayEncoder) {
	ms, loc := t.UnixMilli(), t.Location()
	if f := c.last.Load(); f != nil && f.ms == ms && f.loc == loc {
		enc.AppendString(f.s)
		return
	}
	f := &formattedTime{ms: ms, loc: loc, s: t.Format(iso8601)}
	c.last.Store(f)
	enc.AppendString(f.s)
}
