package config

import (
	"fmt"
	"strconv"
	"time"

	"github.com/wschaos/wschaos/rules"
)

// Duration is a Go duration written as a string, such as "10s" or "1m30s".
type Duration time.Duration

// UnmarshalText parses a Go duration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration; write a Go duration such as \"10s\" or \"500ms\"", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes d as a Go duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// Size is a number of bytes: an integer, or a string with a unit such as
// "16MiB" (B, KB, MB, GB, KiB, MiB, GiB).
type Size int64

// ParseSize parses a size such as "16MiB", "1MB" or "4096".
func ParseSize(s string) (Size, error) {
	n, err := rules.ParseSize(s)
	return Size(n), err
}

// UnmarshalText parses a size.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// MarshalText writes s as a number of bytes.
func (s Size) MarshalText() ([]byte, error) { return []byte(strconv.FormatInt(int64(s), 10)), nil }
