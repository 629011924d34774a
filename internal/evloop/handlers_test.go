//go:build linux

package evloop

import (
	"slices"
	"testing"
)

type nopHandler struct{ id int }

func (*nopHandler) Ready(uint32) {}
func (*nopHandler) Stopped()     {}

func TestHandlers(t *testing.T) {
	a, b := &nopHandler{1}, &nopHandler{2}
	for _, tc := range []struct {
		name string
		do   func(t *handlers)
		want map[int32]Handler // every handler each visits
	}{
		{"empty", func(*handlers) {}, map[int32]Handler{}},
		{"set", func(t *handlers) { t.set(3, a); t.set(1000, b) }, map[int32]Handler{3: a, 1000: b}},
		{"replace", func(t *handlers) { t.set(3, a); t.set(3, b) }, map[int32]Handler{3: b}},
		{"delete", func(t *handlers) { t.set(3, a); t.set(4, b); t.del(3) }, map[int32]Handler{4: b}},
		{"delete unknown", func(t *handlers) { t.set(3, a); t.del(5000); t.del(-1) }, map[int32]Handler{3: a}},
		{"zero", func(t *handlers) { t.set(0, a) }, map[int32]Handler{0: a}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h handlers
			tc.do(&h)
			got := map[int32]Handler{}
			var order []int32
			h.each(func(fd int32, x Handler) { got[fd] = x; order = append(order, fd) })
			if len(got) != len(tc.want) {
				t.Fatalf("each visited %d handlers; want %d", len(got), len(tc.want))
			}
			for fd, want := range tc.want {
				if got[fd] != want || h.get(fd) != want {
					t.Errorf("fd %d: each gave %v, get %v; want %v", fd, got[fd], h.get(fd), want)
				}
			}
			if !slices.IsSorted(order) {
				t.Errorf("each visited %v; want ascending numbers", order)
			}
			for _, fd := range []int32{-1, 1, 2, 999, 1 << 30} {
				if _, ok := tc.want[fd]; !ok && h.get(fd) != nil {
					t.Errorf("get(%d) = %v; want nil", fd, h.get(fd))
				}
			}
		})
	}
}

func TestHandlersDeleteWhileVisiting(t *testing.T) {
	var h handlers
	for fd := range int32(10) {
		h.set(fd, &nopHandler{int(fd)})
	}
	n := 0
	h.each(func(fd int32, _ Handler) { h.del(fd); n++ })
	if n != 10 {
		t.Errorf("visited %d; want 10", n)
	}
	h.each(func(fd int32, _ Handler) { t.Errorf("fd %d still there after its deletion", fd) })
}

// BenchmarkHandlers looks up a socket's handler as a loop does for each
// event, among 8,000 registered sockets: in the loop's table and, for
// comparison, in a map keyed by the number.
func BenchmarkHandlers(b *testing.B) {
	const n = 8000
	hs := make([]Handler, n)
	for i := range hs {
		hs[i] = &nopHandler{i}
	}
	b.Run("table", func(b *testing.B) {
		var t handlers
		for i, h := range hs {
			t.set(int32(i+10), h)
		}
		b.ReportAllocs()
		var i uint32
		for b.Loop() {
			if t.get(int32(i%n+10)) == nil {
				b.Fatal("missing")
			}
			i += 7
		}
	})
	b.Run("map", func(b *testing.B) {
		m := map[int32]Handler{}
		for i, h := range hs {
			m[int32(i+10)] = h
		}
		b.ReportAllocs()
		var i uint32
		for b.Loop() {
			if m[int32(i%n+10)] == nil {
				b.Fatal("missing")
			}
			i += 7
		}
	})
}
