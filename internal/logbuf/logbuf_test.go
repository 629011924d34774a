package logbuf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder is a destination that keeps each Write apart and can be held
// shut so that lines gather behind it.
type recorder struct {
	mu     sync.Mutex
	writes [][]byte
	gate   chan struct{} // when non-nil, each Write waits for a value on it
	err    error
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.gate != nil {
		<-r.gate
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), r.err
}

func (r *recorder) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return string(bytes.Join(r.writes, nil))
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.writes)
}

func newWriter(t *testing.T, dst io.Writer, limit int) *Writer {
	t.Helper()
	w := New(dst, limit)
	t.Cleanup(func() { w.Close() })
	return w
}

func TestLinesArriveInOrderPerWriter(t *testing.T) {
	for _, writers := range []int{1, 8, 64} {
		t.Run(fmt.Sprintf("writers=%d", writers), func(t *testing.T) {
			rec := &recorder{}
			w := newWriter(t, rec, 256) // small, so that writers also wait
			const lines = 200
			var wg sync.WaitGroup
			for g := range writers {
				wg.Go(func() {
					for i := range lines {
						fmt.Fprintf(w, "g%d %d\n", g, i)
					}
				})
			}
			wg.Wait()
			if err := w.Sync(); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			next := make([]int, writers)
			got := strings.Split(strings.TrimSuffix(rec.all(), "\n"), "\n")
			if len(got) != writers*lines {
				t.Fatalf("got %d lines; want %d", len(got), writers*lines)
			}
			for _, l := range got {
				var g, i int
				if _, err := fmt.Sscanf(l, "g%d %d", &g, &i); err != nil {
					t.Fatalf("line %q: %v", l, err)
				}
				if i != next[g] {
					t.Fatalf("writer %d: got line %d; want %d", g, i, next[g])
				}
				next[g]++
			}
		})
	}
}

func TestLinesGatherBehindASlowWrite(t *testing.T) {
	rec := &recorder{gate: make(chan struct{})}
	w := newWriter(t, rec, 0)
	io.WriteString(w, "first\n")
	// The flusher is now held in its first write (or about to be);
	// everything written meanwhile must leave in one more write.
	for i := range 100 {
		fmt.Fprintf(w, "line %d\n", i)
	}
	close(rec.gate)
	if err := w.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if got := rec.count(); got > 2 {
		t.Errorf("got %d writes for 101 lines written behind a held write; want at most 2", got)
	}
	if got, want := strings.Count(rec.all(), "\n"), 101; got != want {
		t.Errorf("got %d lines; want %d", got, want)
	}
}

func TestWriteWaitsPastTheLimit(t *testing.T) {
	rec := &recorder{gate: make(chan struct{})}
	w := newWriter(t, rec, 16)
	io.WriteString(w, "0123456789\n") // taken by the flusher, which is held
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		// Pending grows past 16 bytes: this Write waits for the flusher.
		for range 3 {
			io.WriteString(w, "0123456789\n")
		}
	}()
	select {
	case <-returned:
		t.Fatal("Write returned with more than the limit pending and the destination held")
	case <-time.After(50 * time.Millisecond):
	}
	close(rec.gate)
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("Write still waiting after the destination was released")
	}
}

func TestSyncReportsTheWriteError(t *testing.T) {
	boom := errors.New("disk full")
	rec := &recorder{err: boom}
	w := newWriter(t, rec, 0)
	io.WriteString(w, "x\n")
	if err := w.Sync(); !errors.Is(err, boom) {
		t.Errorf("Sync: got %v; want %v", err, boom)
	}
}

func TestCloseWritesPendingAndThenWritesThrough(t *testing.T) {
	rec := &recorder{}
	w := New(rec, 0)
	io.WriteString(w, "before\n")
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got, want := rec.all(), "before\n"; got != want {
		t.Fatalf("after Close: got %q; want %q", got, want)
	}
	io.WriteString(w, "after\n")
	if got, want := rec.all(), "before\nafter\n"; got != want {
		t.Errorf("a write after Close: got %q; want %q", got, want)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := w.Sync(); err != nil {
		t.Errorf("Sync after Close: %v", err)
	}
}

func ExampleWriter() {
	var out bytes.Buffer
	w := New(&out, 0)
	io.WriteString(w, `{"msg":"session opened"}`+"\n")
	io.WriteString(w, `{"msg":"session ended"}`+"\n")
	w.Sync() // both lines have reached out
	fmt.Print(out.String())
	w.Close()
	// Output:
	// {"msg":"session opened"}
	// {"msg":"session ended"}
}

func BenchmarkWrite(b *testing.B) {
	line := []byte(`{"level":"info","ts":"2026-11-25T16:00:00.000Z","msg":"session ended","session":1234}` + "\n")
	w := New(io.Discard, 0)
	defer w.Close()
	b.ReportAllocs()
	b.SetBytes(int64(len(line)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w.Write(line)
		}
	})
}

// BenchmarkSpacedLines writes lines a few microseconds apart, as a proxy
// under a steady connect load does, and reports how many writes reach the
// destination per line: each is a wake-up of the flusher and a syscall.
func BenchmarkSpacedLines(b *testing.B) {
	line := []byte(`{"level":"info","ts":"2026-11-25T16:00:00.000Z","msg":"session ended","session":1234}` + "\n")
	var dst countingWriter
	w := New(&dst, 0)
	b.ReportAllocs()
	for b.Loop() {
		w.Write(line)
		for start := time.Now(); time.Since(start) < 5*time.Microsecond; {
		}
	}
	w.Close()
	b.ReportMetric(float64(dst.writes.Load())/float64(b.N), "writes/line")
}

type countingWriter struct{ writes atomic.Int64 }

func (c *countingWriter) Write(p []byte) (int, error) { c.writes.Add(1); return len(p), nil }

// firstHeld holds its first Write until release is closed; later Writes
// go through at once.
type firstHeld struct {
	mu      sync.Mutex
	out     bytes.Buffer
	n       int
	entered chan struct{}
	release chan struct{}
}

func (d *firstHeld) Write(p []byte) (int, error) {
	d.mu.Lock()
	d.n++
	first := d.n == 1
	d.mu.Unlock()
	if first {
		close(d.entered)
		<-d.release
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out.Write(p)
}

func (d *firstHeld) String() string { d.mu.Lock(); defer d.mu.Unlock(); return d.out.String() }

func closedYet(w *Writer) bool { w.mu.Lock(); defer w.mu.Unlock(); return w.closed }

// A line written (by the same goroutine) after earlier lines, while Close
// is under way, reaches the destination before them; Sync called then
// returns before the earlier lines are written.
// A line written while Close is still flushing goes after the lines
// before it, and Sync then returns only once all of them are written.
func TestWriteDuringClose(t *testing.T) {
	d := &firstHeld{entered: make(chan struct{}), release: make(chan struct{})}
	w := New(d, 0)
	io.WriteString(w, "a\n")
	<-d.entered // the flusher is writing "a"
	io.WriteString(w, "b\n")
	closed := make(chan struct{})
	go func() { w.Close(); close(closed) }()
	for !closedYet(w) {
		time.Sleep(time.Millisecond)
	}
	synced := make(chan string)
	go func() {
		io.WriteString(w, "c\n")
		w.Sync()
		synced <- d.String()
	}()
	time.Sleep(50 * time.Millisecond) // let "c" overtake, if it can
	close(d.release)
	<-closed
	if got := <-synced; got != "a\nb\nc\n" {
		t.Errorf("after Sync returned the destination held %q; want %q", got, "a\nb\nc\n")
	}
	if got := d.String(); got != "a\nb\nc\n" {
		t.Errorf("destination got %q; want %q", got, "a\nb\nc\n")
	}
}
