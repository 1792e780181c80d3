// Command start measures how long `condaproxy serve` takes to start serving with
// a million package blobs in its cache, against the target of 2 s, and against
// the same start with an empty cache (the baseline: process start, config,
// Pebble, the listener).
//
//	go run ./bench/start [-blobs 1000000] [-rounds 3] [-keep]
//
// It builds the real binary (`go build ./cmd/condaproxy`, so run it from the
// repository root) and, for 0 blobs and then each size of -blobs:
//
//  1. writes the blobs straight into a fresh data directory (bench.MakeBlobs);
//  2. opens it once in this process with cache.Open, which adopts them (writes
//     their table entries), opens every blob once in a random order so that
//     access times are distinct as in a cache that has served them
//     (bench.TouchAll), and closes it: the data directory is then what a
//     server that committed and served those blobs leaves behind;
//  3. -rounds times: starts `condaproxy serve -c <cfg>` and times until GET
//     /healthz answers 200 (polled every 5 ms; the listener opens only once
//     cache.Open has returned), checks on /metrics that the process sees the N
//     blobs, and stops it with SIGTERM (the stop is timed too). A store that
//     squares its table with the files in the background after Open may still
//     be doing so when /healthz answers: that is serving, and counts as such.
//
// The config has one channel, whose upstream is a file:// directory with an
// empty noarch/repodata.json (nothing is fetched at start), log level warn, and
// cache.max_size equal to the blobs' total (at least 1 MiB, the config's
// minimum): the cache is full, as a long-running one is.
//
// Rounds after the first find the files' inodes in the kernel's cache, as does
// the first (the files were just written): these are warm starts, a restart of
// a running machine. A cold boot reads the blobs' directories from disk on top.
//
// It prints a line per round, then each size's median, the median less the
// baseline's, and whether it meets the target. The data directories are made in
// $TMPDIR (else /tmp) and removed once measured (timed: a million unlinks can
// take minutes), unless -keep.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/condaproxy/condaproxy/bench"
	"github.com/condaproxy/condaproxy/cache"
)

func main() {
	blobs := flag.String("blobs", "1000000", "comma-separated cache sizes, in blobs (0 blobs, the baseline, is always measured first)")
	rounds := flag.Int("rounds", 3, "starts per size")
	size := flag.Int("size", 64, "bytes per blob")
	target := flag.Duration("target", 2*time.Second, "time to serving to meet")
	keep := flag.Bool("keep", false, "keep the temp directory")
	flag.Parse()
	sizes := []int{0}
	for _, s := range strings.Split(*blobs, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 {
			fmt.Fprintf(os.Stderr, "start: -blobs: bad size %q\n", s)
			os.Exit(2)
		}
		if n > 0 {
			sizes = append(sizes, n)
		}
	}
	if *rounds < 1 || *size < 1 {
		fmt.Fprintln(os.Stderr, "start: -rounds and -size must be positive")
		os.Exit(2)
	}
	if err := run(sizes, *rounds, *size, *target, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "start:", err)
		os.Exit(1)
	}
}

type sizeResult struct {
	n      int
	starts []time.Duration
	median time.Duration
}

func run(sizes []int, rounds, blobSize int, target time.Duration, keep bool) error {
	// The machine may be shared: the load says how far to trust the figures.
	load := bench.LoadAvg()
	fmt.Printf("start: condaproxy serve until /healthz answers; GOMAXPROCS %d, load average %s\n", runtime.GOMAXPROCS(0), load)
	tmp, cleanup, err := bench.TempDir("start-", keep)
	if err != nil {
		return err
	}
	defer cleanup()
	bin := filepath.Join(tmp, "condaproxy")
	if err := bench.BuildHere(bin); err != nil {
		return err
	}
	upstream := filepath.Join(tmp, "upstream")
	if err := os.MkdirAll(filepath.Join(upstream, "noarch"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(upstream, "noarch", "repodata.json"),
		[]byte(`{"info":{"subdir":"noarch"},"packages":{},"packages.conda":{},"removed":[],"repodata_version":1}`+"\n"), 0o644); err != nil {
		return err
	}

	var results []sizeResult
	for _, n := range sizes {
		r, err := measure(bin, tmp, upstream, n, rounds, blobSize, keep)
		if err != nil {
			return fmt.Errorf("%d blobs: %w", n, err)
		}
		results = append(results, r)
	}

	fmt.Printf("\nsummary: time from exec to /healthz 200, median of %d\n", rounds)
	base := results[0]
	for _, r := range results {
		verdict := "met"
		if r.median > target {
			verdict = "NOT met"
		}
		over := "(the baseline)"
		if r.n != base.n {
			over = round(r.median - base.median).String()
			if r.median >= base.median {
				over = "+" + over
			}
			over += " over 0 blobs"
		}
		fmt.Printf("  %8d blobs  median %8s  (rounds %s)  %-24s target <= %v: %s\n",
			r.n, round(r.median), list(r.starts), over, target, verdict)
	}
	return nil
}

func measure(bin, tmp, upstream string, n, rounds, blobSize int, keep bool) (sizeResult, error) {
	r := sizeResult{n: n}
	data := filepath.Join(tmp, fmt.Sprintf("data-%d", n))
	if !keep {
		// A million files go as soon as they are measured, not at the end.
		// Timed, because it can take longer than the measurement: every unlink
		// frees a block, which a filesystem mounted with discard also trims.
		defer func() {
			fmt.Print("  removing the data directory... ")
			t := time.Now()
			os.RemoveAll(data)
			fmt.Printf("%s\n", round(time.Since(t)))
		}()
	}
	fmt.Printf("\n== %d blobs of %d bytes\n", n, blobSize)
	t0 := time.Now()
	blobs, err := bench.MakeBlobs(data, n, blobSize, 1)
	if err != nil {
		return r, err
	}
	create := time.Since(t0)
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	t0 = time.Now()
	st, err := cache.Open(data, cache.Options{MaxSize: blobs.Total(), Logger: quiet})
	if err != nil {
		return r, err
	}
	// Adoption may end after Open returns; a Close before would stop it half-way.
	bench.WaitReady(st)
	adopt := time.Since(t0)
	t0 = time.Now()
	if _, err := bench.TouchAll(st, blobs, rand.New(rand.NewPCG(uint64(n), 3))); err != nil {
		st.Close()
		return r, err
	}
	touch := time.Since(t0)
	if err := st.Close(); err != nil {
		return r, err
	}
	fmt.Printf("  prepare: create the files %s, adopt (cache.Open in this process) %s, open each once %s\n",
		round(create), round(adopt), round(touch))

	port, err := bench.FreePort()
	if err != nil {
		return r, err
	}
	// cache.max_size: the config refuses less than 1 MiB.
	maxSize := max(blobs.Total(), 1<<20)
	cfg := fmt.Sprintf("listen: 127.0.0.1:%d\ndata: %s\nlog: {level: warn}\ncache: {max_size: %d}\nchannels:\n  - name: big\n    upstreams: [{url: \"file://%s\"}]\n",
		port, data, maxSize, upstream)
	cfgPath := filepath.Join(tmp, fmt.Sprintf("condaproxy-%d.yaml", n))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return r, err
	}
	for i := 1; i <= rounds; i++ {
		s, err := startOnce(bin, cfgPath, port, n)
		if err != nil {
			return r, fmt.Errorf("round %d: %w", i, err)
		}
		fmt.Printf("  round %d: serving in %8s  (peak RSS %6.1f MB; SIGTERM to exit %s)\n",
			i, round(s.ready), float64(s.hwm)/1e6, round(s.stop))
		r.starts = append(r.starts, s.ready)
	}
	sorted := slices.Clone(r.starts)
	slices.Sort(sorted)
	r.median = sorted[len(sorted)/2] // of an even count, the upper of the two middle ones
	return r, nil
}

type start struct {
	ready, stop time.Duration
	hwm         int64
}

// startOnce runs the server once: exec to /healthz 200, a look at /metrics, and
// SIGTERM to exit.
func startOnce(bin, cfgPath string, port, n int) (start, error) {
	var s start
	var out bytes.Buffer // shown when something goes wrong
	cmd := exec.Command(bin, "serve", "-c", cfgPath)
	cmd.Stdout, cmd.Stderr = &out, &out
	exited := make(chan error, 1)
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return s, err
	}
	go func() { exited <- cmd.Wait() }()
	stop := func() time.Duration {
		t := time.Now()
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		return time.Since(t)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	// No keep-alive: each poll is a fresh connection, as a load balancer's probe is.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := client.Get(base + "/healthz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				s.ready = time.Since(t0)
				break
			}
		}
		select {
		case err := <-exited:
			return s, fmt.Errorf("condaproxy exited before serving (%v):\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			stop()
			return s, fmt.Errorf("no 200 from /healthz within 2 minutes:\n%s", out.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.hwm = bench.ProcStatus(cmd.Process.Pid, "VmHWM:")
	// The process must see the blobs, or a fast start would prove nothing.
	files, err := cacheFiles(client, base)
	if err != nil || files != n {
		stop()
		return s, fmt.Errorf("/metrics: condaproxy_cache_files %d (%v), want %d\n%s", files, err, n, out.String())
	}
	s.stop = stop()
	if strings.Contains(out.String(), `"level":"ERROR"`) {
		return s, fmt.Errorf("condaproxy logged an error:\n%s", out.String())
	}
	return s, nil
}

// cacheFiles reads the gauge condaproxy_cache_files (the store's blob count) from
// /metrics.
func cacheFiles(client *http.Client, base string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/metrics", nil)
	resp, err := client.Do(req)
	if err != nil {
		return -1, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return -1, fmt.Errorf("status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "condaproxy_cache_files "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int(f), err
		}
	}
	return -1, fmt.Errorf("no condaproxy_cache_files line")
}

func list(ds []time.Duration) string {
	var s []string
	for _, d := range ds {
		s = append(s, round(d).String())
	}
	return strings.Join(s, " ")
}

// round keeps about three significant figures.
func round(d time.Duration) time.Duration {
	a := d
	if a < 0 {
		a = -a
	}
	switch {
	case a >= 10*time.Second:
		return d.Round(100 * time.Millisecond)
	case a >= time.Second:
		return d.Round(10 * time.Millisecond)
	case a >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	default:
		return d.Round(10 * time.Microsecond)
	}
}
