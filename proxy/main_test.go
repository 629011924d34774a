package proxy_test

import (
	"os"
	"runtime"
	"strconv"
	"testing"

	"github.com/wschaos/wschaos/proxy"
)

// testLoops returns how many event loops the tests' proxies run
// (WSCHAOS_TEST_LOOPS; 0: none), so that the whole suite can run with
// sessions on loops as well as on goroutines. It is read by the tests
// themselves, not only as the package starts: go test's cache keys a
// result on the environment variables a test reads, and one read before
// the tests start is not seen.
func testLoops() int {
	n, _ := strconv.Atoi(os.Getenv("WSCHAOS_TEST_LOOPS"))
	return n
}

// onGoroutines runs a test's proxy without loops, for tests of the
// copiers themselves.
func onGoroutines(p *proxy.Proxy) { p.Loops = 0 }

func TestMain(m *testing.M) {
	if n := testLoops(); n > 0 {
		// A loop keeps its P: leave one for everything else.
		runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0), n+1))
	}
	os.Exit(m.Run())
}
