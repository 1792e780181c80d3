package scale

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/internal/testdata"
	"github.com/condaproxy/condaproxy/internal/testproc"
)

// bin is the condaproxy binary TestMain builds: the replicas are the real program,
// as an operator runs it, so what passes here passes for them.
var bin string

func TestMain(m *testing.M) {
	os.Exit(testproc.RunWithBinary(m, "scale", &bin))
}

// waitDial waits up to limit for something to accept on addr.
func waitDial(addr string, limit time.Duration, exited func() bool) error {
	deadline := time.Now().Add(limit)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		if exited() {
			return errors.New("process exited")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s after %v", addr, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// --- processes -------------------------------------------------------------------

// proc is one child process the test started. Killed, a replica's Redis leases
// are not released: they run out, as they would after a real crash.
type proc = testproc.Proc

// --- redis-server ------------------------------------------------------------------

// redisServer is a real redis-server on a loopback port, with no persistence: a
// restart brings it back empty on the same port, as a Redis pod replaced by its
// Deployment does, and every lease and subscription it held is gone.
type redisServer struct {
	t    *testing.T
	bin  string
	port int
	dir  string
	addr string

	mu sync.Mutex
	p  *proc
}

func startRedis(t *testing.T) *redisServer {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		testdata.Skipf(t, testdata.Redis, "redis-server is not installed (apt-get install redis-server)")
	}
	r := &redisServer{t: t, bin: path, dir: t.TempDir()}
	for attempt := 1; ; attempt++ {
		r.port = testproc.FreePort(t)
		r.addr = fmt.Sprintf("127.0.0.1:%d", r.port)
		err := r.start()
		if err == nil {
			return r
		}
		if attempt == 3 {
			t.Fatal(err)
		}
	}
}

func (r *redisServer) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := testproc.Start(r.t, nil, r.bin, "--bind", "127.0.0.1", "--port", fmt.Sprint(r.port),
		"--save", "", "--appendonly", "no", "--dir", r.dir)
	if err := waitDial(r.addr, 10*time.Second, p.Exited); err != nil {
		p.Kill()
		return fmt.Errorf("redis-server on %s: %v\n%s", r.addr, err, p.Tail(2000))
	}
	r.p = p
	return nil
}

// kill stops Redis at once, as a crash or a network cut would.
func (r *redisServer) kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.p != nil {
		r.p.Kill()
		r.p = nil
	}
}

// restart starts Redis again on the same port, empty.
func (r *redisServer) restart() {
	r.t.Helper()
	r.kill()
	var err error
	// The port was just ours; a moment in TIME_WAIT or a stranger taking it is
	// retried a few times before the test gives up.
	for range 5 {
		if err = r.start(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	r.t.Fatal(err)
}

// --- HTTP --------------------------------------------------------------------------

// client opens a new connection for every request: replicas are killed, and a
// kept-alive connection to a dead one would only add noise. Its timeout is long
// enough for a takeover after a killed holder (a 10 s lease, then the fill).
var client = &http.Client{
	Timeout:   90 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true},
}

// answer is what one request got. err is set when no answer came or the body
// broke off (a short body against Content-Length is io.ErrUnexpectedEOF): then
// body holds what arrived before.
type answer struct {
	code   int
	header http.Header
	length int64 // Content-Length, -1 when the answer had none
	body   []byte
	err    error
}

func (a answer) String() string {
	return fmt.Sprintf("%d (%d bytes, Content-Length %d) err=%v: %.200q", a.code, len(a.body), a.length, a.err, a.body)
}

// do sends method to url with the given headers and body and reads the whole answer.
func do(method, url string, header http.Header, body io.Reader) answer {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return answer{err: err}
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{code: resp.StatusCode, header: resp.Header, length: resp.ContentLength, body: b, err: err}
}

func get(url string) answer { return do(http.MethodGet, url, nil, nil) }

// --- checks --------------------------------------------------------------------------

func sha256hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// wholeAndRight says why a package answer is not the whole right file, or "" when
// it is: 200, every byte of its Content-Length, and the size and sha256 the
// repodata gives.
func wholeAndRight(a answer, p pkg) string {
	switch {
	case a.err != nil:
		return fmt.Sprintf("broken transfer: %v after %d bytes (code %d)", a.err, len(a.body), a.code)
	case a.code != http.StatusOK:
		return fmt.Sprintf("status %d: %.200q", a.code, a.body)
	case a.length != p.size:
		return fmt.Sprintf("Content-Length %d, the record says %d", a.length, p.size)
	case int64(len(a.body)) != p.size:
		return fmt.Sprintf("%d bytes, the record says %d", len(a.body), p.size)
	case sha256hex(a.body) != p.sha:
		return fmt.Sprintf("sha256 %s, the record says %s", sha256hex(a.body), p.sha)
	}
	return ""
}

// presentedAsWhole says whether a client would take the answer for a complete
// file: a 200 whose body arrived without error. Such an answer must be right.
func presentedAsWhole(a answer) bool { return a.err == nil && a.code == http.StatusOK }

var shaName = regexp.MustCompile(`^[0-9a-f]{64}$`)

// checkLocalTier reads a live replica's data directory: every file under blobs/
// hashes to its name (nothing partial is visible), and tmp/ holds no fill once the
// replica is idle.
func checkLocalTier(t *testing.T, r *replica) {
	t.Helper()
	root := filepath.Join(r.data, "blobs")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // evicted or purged while we walked
		}
		if err != nil {
			return err
		}
		if !shaName.MatchString(d.Name()) || sha256hex(b) != d.Name() {
			rel, _ := filepath.Rel(r.data, p)
			t.Errorf("%s: %s is %d bytes hashing to %s: a partial or stray file is visible", r.name, rel, len(b), sha256hex(b))
		}
		return nil
	})
	if err != nil {
		t.Errorf("%s: read %s: %v", r.name, root, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		entries, err := os.ReadDir(filepath.Join(r.data, "tmp"))
		if errors.Is(err, fs.ErrNotExist) || (err == nil && len(entries) == 0) {
			return
		}
		if time.Now().After(deadline) {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			t.Errorf("%s: tmp/ still holds %v (err %v) with no fill running", r.name, names, err)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metric is the value of an unlabelled metric on a replica's /metrics, "" if absent.
func metric(r *replica, name string) string {
	a := get(r.base + "/metrics")
	if a.err != nil || a.code != http.StatusOK {
		return ""
	}
	for _, line := range strings.Split(string(a.body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// eventually polls cond every 100 ms until it returns "" or limit passes, and
// returns the last reason it gave.
func eventually(limit time.Duration, cond func() string) string {
	deadline := time.Now().Add(limit)
	for {
		why := cond()
		if why == "" || time.Now().After(deadline) {
			return why
		}
		time.Sleep(100 * time.Millisecond)
	}
}
