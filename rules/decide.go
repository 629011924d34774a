package rules

import (
	"encoding/binary"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"time"
)

// The decisions below depend only on the seed, the rule's name and the
// session's ordinal (1 for the first session the proxy accepted, and so on),
// never on timing or on which goroutine asks: the same seed and the same
// sequence of connections give the same faults.

// Hit reports whether r applies to the session with this ordinal. It is
// decided once per session and rule; probabilities 0 and 1 are exact.
func (r *Rule) Hit(seed, ordinal uint64) bool {
	switch {
	case r.Probability >= 1:
		return true
	case r.Probability <= 0:
		return false
	}
	return unit(seed, r.Name, ordinal, "hit") < r.Probability
}

// Delay returns how long after the session opened (or after the rule was
// loaded, for sessions older than it) an After rule fires: After, or a
// uniform draw from [After, AfterMax] when a range was written.
func (r *Rule) Delay(seed, ordinal uint64) time.Duration {
	span := r.AfterMax - r.After
	if span <= 0 {
		return r.After
	}
	// In floating point, so that the widest range does not overflow; the
	// product is below span+1, and rounding is clamped.
	d := time.Duration(unit(seed, r.Name, ordinal, "after") * (float64(span) + 1))
	return r.After + min(d, span)
}

// Rand returns the random source for r's draws within one session (a
// delay's jitter), seeded from the seed, the rule and the ordinal.
func (r *Rule) Rand(seed, ordinal uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, hash(seed, r.Name, ordinal, "rand")))
}

// JitterFrom draws one message's extra delay from src: uniform in [0, Jitter].
func (a *Action) JitterFrom(src *rand.Rand) time.Duration {
	switch {
	case a.Jitter <= 0:
		return 0
	case a.Jitter == math.MaxInt64:
		return time.Duration(src.Int64()) // Jitter+1 would overflow
	}
	return time.Duration(src.Int64N(int64(a.Jitter) + 1))
}

// unit maps (seed, name, ordinal, purpose) to a float in [0, 1).
func unit(seed uint64, name string, ordinal uint64, purpose string) float64 {
	return float64(hash(seed, name, ordinal, purpose)>>11) / (1 << 53)
}

func hash(seed uint64, name string, ordinal uint64, purpose string) uint64 {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], seed)
	h.Write(b[:])
	h.Write([]byte(name))
	h.Write([]byte{0})
	binary.LittleEndian.PutUint64(b[:], ordinal)
	h.Write(b[:])
	h.Write([]byte(purpose))
	return mix(h.Sum64())
}

// mix is splitmix64's finalizer, so that neighbouring ordinals give
// unrelated values.
func mix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
