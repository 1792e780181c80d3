// Command evict measures a commit into a full cache: the cost of the eviction
// every new blob causes once the cache is at its cap, as the cache grows from
// 100,000 to 1,000,000 blobs. The target is O(log n) per commit, so the time of a
// commit should stay flat (about 1.0x) from one size to the next.
//
//	go run ./bench/evict [-blobs 100000,1000000] [-commits 2000] [-keep]
//
// First, a baseline: the same commits into an empty store with no cap, so no
// eviction (a commit's fixed cost: temp file, fsync, rename, Pebble write).
// Then, for each size N, it:
//
//  1. writes N blobs of -size bytes (64) straight into a fresh data directory
//     (bench.MakeBlobs: blobs/<sha[:2]>/<sha>, no table entries);
//  2. opens it with cache.Open and MaxSize exactly their total, so the cache is
//     full: this first open adopts the files (timed until the store is ready:
//     a store that squares its table with the files in the background after
//     Open says when it is done with a Ready() channel, bench.WaitReady);
//  3. opens every blob once in a random order (bench.TouchAll), so access times
//     are distinct as in a cache that has served them, and closes the store (the
//     close writes them to the table);
//  4. opens it again: the table now comes from Pebble, as at any restart;
//  5. times -commits commits of new distinct blobs of the same size through
//     NewTemp/Write/Commit, each of which must evict one, while -openers
//     goroutines open and close random blobs of the first N (OpenBlob takes the
//     lock eviction holds, so a slow eviction shows up as their latency). Every
//     open must succeed (and its bytes hash to its name) or answer
//     cache.ErrNotFound (evicted); anything else fails the run;
//  6. checks that Usage() is at most MaxSize with exactly N blobs, that every
//     blob committed is still there, and that no blob was evicted out of LRU
//     order (see checkAfter), then closes and opens once more to check the table
//     and the files agree after the evictions.
//
// It prints each size's figures as it goes, then a summary table, what eviction
// adds to a commit over the baseline, and each size's p50, mean, p99 and CPU per
// commit against the first size's. A commit's wall time is mostly fsyncs (the
// temp file, the Pebble writes of the new entry and of the removed one), which do
// not depend on N but do vary with the disk's other users; the process CPU per
// commit does not, so on a busy machine read the CPU ratio first.
// -cpuprofile writes a CPU profile of each size's commit phase (FILE.<N>), for
// `go tool pprof -top`.
//
// It needs nothing but Go, and room in the temp dir ($TMPDIR, else /tmp): a
// million 64-byte files take a million inodes and 4 GB of 4 KiB blocks. Point
// TMPDIR at the disk real data directories live on: fsync, create and unlink are
// that disk's. Each size's directory is removed once measured (timed: a million
// unlinks can take minutes), unless -keep.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/condaproxy/condaproxy/bench"
	"github.com/condaproxy/condaproxy/cache"
)

type options struct {
	sizes      []int
	commits    int
	blobSize   int
	openers    int
	openGap    time.Duration
	budget     time.Duration
	keep       bool
	cpuprofile string
}

func main() {
	var o options
	blobs := flag.String("blobs", "100000,1000000", "comma-separated cache sizes, in blobs")
	flag.IntVar(&o.commits, "commits", 2000, "commits timed at each size (each evicts one blob)")
	flag.IntVar(&o.blobSize, "size", 64, "bytes per blob")
	flag.IntVar(&o.openers, "openers", 4, "goroutines opening random blobs while the commits run")
	flag.DurationVar(&o.openGap, "open-gap", time.Millisecond, "pause of each opener between two opens")
	flag.DurationVar(&o.budget, "budget", 4*time.Minute, "stop a size's commits after this long (an eviction that scans the whole table takes long at 1M)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temp directory")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of each size's commit phase to FILE.<N>")
	flag.Parse()
	for _, s := range strings.Split(*blobs, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "evict: -blobs: bad size %q\n", s)
			os.Exit(2)
		}
		o.sizes = append(o.sizes, n)
	}
	if o.commits < 1 || o.blobSize < 1 || o.openers < 0 {
		fmt.Fprintln(os.Stderr, "evict: -commits and -size must be positive, -openers not negative")
		os.Exit(2)
	}
	for _, n := range o.sizes {
		if o.commits >= n {
			// Each commit evicts one of the first N; past N the openers would find
			// nothing and the LRU check would have nothing to say.
			fmt.Fprintf(os.Stderr, "evict: -commits %d must be smaller than every size (%d)\n", o.commits, n)
			os.Exit(2)
		}
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "evict:", err)
		os.Exit(1)
	}
}

// result is one size's figures.
type result struct {
	n                      int
	create                 time.Duration
	adopt, touch, closeT   time.Duration
	reopen, afterOpen      time.Duration
	commits                int // done (fewer than asked when the budget ran out)
	mean, p50, p99, maxC   time.Duration
	cpu                    time.Duration // process CPU per commit; -1: unknown
	opens, notFound        int64
	openP50, openP99, omax time.Duration
}

func run(o options) error {
	// The machine may be shared: the load says how far to trust the figures.
	load := bench.LoadAvg()
	fmt.Printf("evict: commit into a full cache; GOMAXPROCS %d, load average %s\n", runtime.GOMAXPROCS(0), load)
	fmt.Printf("%d commits of %d-byte blobs per size, %d opener(s) pausing %v between opens\n\n",
		o.commits, o.blobSize, o.openers, o.openGap)
	tmp, cleanup, err := bench.TempDir("evict-", o.keep)
	if err != nil {
		return err
	}
	defer cleanup()
	base, err := baseline(o, tmp)
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	fmt.Println()
	var results []result
	for _, n := range o.sizes {
		r, err := measure(o, tmp, n)
		if err != nil {
			return fmt.Errorf("%d blobs: %w", n, err)
		}
		results = append(results, r)
		fmt.Println()
	}
	printSummary(base, results)
	return nil
}

func measure(o options, tmp string, n int) (result, error) {
	r := result{n: n}
	dir := filepath.Join(tmp, fmt.Sprintf("data-%d", n))
	fmt.Printf("== %d blobs of %d bytes, cache full (MaxSize = %d bytes)\n", n, o.blobSize, int64(n)*int64(o.blobSize))
	if !o.keep {
		// Each size's million files go as soon as it is measured, not at the end.
		// Timed, because it can take longer than the measurement: every unlink
		// frees a block, which a filesystem mounted with discard also trims.
		defer func() {
			fmt.Print("  removing the data directory... ")
			t := time.Now()
			os.RemoveAll(dir)
			fmt.Printf("%s\n", round(time.Since(t)))
		}()
	}

	start := time.Now()
	blobs, err := bench.MakeBlobs(dir, n, o.blobSize, 1)
	if err != nil {
		return r, err
	}
	r.create = time.Since(start)
	fmt.Printf("  create the files:               %8s  (%.0f files/s)\n", round(r.create), float64(n)/r.create.Seconds())

	// Errors only: the store says "adopted blobs" at Info on the first open.
	opts := cache.Options{
		MaxSize: blobs.Total(),
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	st, returned, settled, err := openSettled(dir, opts)
	if err != nil {
		return r, err
	}
	r.adopt = settled
	if err := checkUsage(st, n, blobs.Total()); err != nil {
		st.Close()
		return r, fmt.Errorf("after adoption: %w", err)
	}
	fmt.Printf("  first open (adopts the files):  %8s  (Open returned after %s)\n", round(r.adopt), round(returned))

	start = time.Now()
	order, err := bench.TouchAll(st, blobs, rand.New(rand.NewPCG(uint64(n), 2)))
	if err != nil {
		st.Close()
		return r, err
	}
	r.touch = time.Since(start)
	start = time.Now()
	if err := st.Close(); err != nil {
		return r, err
	}
	r.closeT = time.Since(start)
	fmt.Printf("  open every blob once, randomly: %8s  (%s per open), close (writes the access times): %s\n",
		round(r.touch), round(r.touch/time.Duration(n)), round(r.closeT))

	// The commits are timed from a settled store: a reconcile still listing
	// directories would be timed with them.
	st, returned, r.reopen, err = openSettled(dir, opts)
	if err != nil {
		return r, err
	}
	if err := checkUsage(st, n, blobs.Total()); err != nil {
		st.Close()
		return r, fmt.Errorf("after reopen: %w", err)
	}
	fmt.Printf("  second open (table from Pebble): %7s  (Open returned after %s)\n", round(r.reopen), round(returned))

	committed, opened, err := commitPhase(o, st, blobs, &r)
	if err != nil {
		st.Close()
		return r, err
	}
	if err := checkAfter(st, blobs, order, committed, opened, r.commits); err != nil {
		st.Close()
		return r, err
	}
	if err := st.Close(); err != nil {
		return r, err
	}
	st, returned, r.afterOpen, err = openSettled(dir, opts)
	if err != nil {
		return r, err
	}
	err = checkUsage(st, n, blobs.Total())
	st.Close()
	if err != nil {
		return r, fmt.Errorf("open after the commits (table and files disagree): %w", err)
	}
	fmt.Printf("  open after the commits:         %8s  (Open returned after %s; %d blobs, %d bytes: ok)\n",
		round(r.afterOpen), round(returned), n, blobs.Total())
	return r, nil
}

// commitPhase times the commits and runs the openers beside them. It returns the
// names committed and, per blob index of the first N, whether an opener opened
// it (which makes it recently used: see checkAfter).
func commitPhase(o options, st *cache.Store, blobs *bench.Blobs, r *result) (committed []string, opened []atomic.Bool, err error) {
	n := len(blobs.SHAs)
	opened = make([]atomic.Bool, n)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	lat := make([][]time.Duration, o.openers)
	var notFound atomic.Int64
	var openErr atomic.Pointer[error]
	for g := 0; g < o.openers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(n), uint64(100+g)))
			buf := make([]byte, blobs.Size+1)
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := rng.IntN(n)
				name := blobs.Name(i)
				t0 := time.Now()
				b, err := st.OpenBlob(name)
				lat[g] = append(lat[g], time.Since(t0))
				switch {
				case errors.Is(err, cache.ErrNotFound):
					notFound.Add(1)
				case err != nil:
					openErr.CompareAndSwap(nil, &err)
					return
				default:
					opened[i].Store(true)
					// The bytes must be the blob's: an eviction that removed the
					// file of a blob still open, or the wrong file, shows here.
					k, rerr := io.ReadFull(b, buf)
					b.Close()
					if k != blobs.Size || !errors.Is(rerr, io.ErrUnexpectedEOF) {
						e := fmt.Errorf("open %s: read %d bytes (%v), want %d", name, k, rerr, blobs.Size)
						openErr.CompareAndSwap(nil, &e)
						return
					}
					if sum := sha256.Sum256(buf[:k]); sum != blobs.SHAs[i] {
						e := fmt.Errorf("open %s: bytes hash to %s", name, hex.EncodeToString(sum[:]))
						openErr.CompareAndSwap(nil, &e)
						return
					}
				}
				time.Sleep(o.openGap)
			}
		}()
	}

	if o.cpuprofile != "" {
		f, err := os.Create(fmt.Sprintf("%s.%d", o.cpuprofile, n))
		if err != nil {
			close(stop)
			wg.Wait()
			return nil, nil, err
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}

	// New blobs come from another seed than the first N, so none is already there.
	maxCount := 0
	committed, err = commitMany(o, st, blobs.Seed+1000, blobs.Size, r, func() {
		// Not timed. An eviction done later (in the background) would show as
		// a count above N here; the final check waits for it.
		if _, c, _ := st.Usage(); c > maxCount {
			maxCount = c
		}
	})
	close(stop)
	wg.Wait()
	if err != nil {
		return nil, nil, err
	}
	if p := openErr.Load(); p != nil {
		return nil, nil, fmt.Errorf("an opener got an error other than ErrNotFound: %w", *p)
	}
	fmt.Printf("  %d commits, each evicting one:  mean %s  p50 %s  p99 %s  max %s  CPU %s per commit  (count after a commit at most %d)\n",
		r.commits, round(r.mean), round(r.p50), round(r.p99), round(r.maxC), cpuString(r.cpu), maxCount)

	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	r.opens, r.notFound = int64(len(all)), notFound.Load()
	if len(all) > 0 {
		slices.Sort(all)
		r.openP50, r.openP99, r.omax = pct(all, 50), pct(all, 99), all[len(all)-1]
		fmt.Printf("  concurrent OpenBlob (%d goroutines): %d opens, %d evicted (ErrNotFound), no other error; p50 %s  p99 %s  max %s\n",
			o.openers, r.opens, r.notFound, round(r.openP50), round(r.openP99), round(r.omax))
	}
	return committed, opened, nil
}

// commitMany commits o.commits new blobs of size bytes (BlobContent(seed, i))
// through NewTemp/Write/Commit, timing each, and fills r's commit figures.
// after runs after each commit, untimed. It stops early, saying so, when the
// budget is spent. The process's CPU time over the loop, per commit, is the
// figure I/O noise does not move: a commit's wall time is mostly its fsyncs,
// which vary with the disk and its other users, while an eviction that scans the
// table shows up in CPU (it includes the openers' and the GC's share).
func commitMany(o options, st *cache.Store, seed uint64, size int, r *result, after func()) (committed []string, err error) {
	times := make([]time.Duration, 0, o.commits)
	phase := time.Now()
	cpu0 := cpuTime()
	for i := 0; i < o.commits; i++ {
		if time.Since(phase) > o.budget {
			fmt.Printf("  budget %v spent: stopped after %d of %d commits\n", o.budget, i, o.commits)
			break
		}
		data := bench.BlobContent(seed, i, size)
		sum := sha256.Sum256(data)
		want := hex.EncodeToString(sum[:])
		t0 := time.Now()
		t, err := st.NewTemp()
		if err == nil {
			_, err = t.Write(data)
		}
		var sha string
		if err == nil {
			sha, err = t.Commit(cache.Digest{Size: int64(size), SHA256: want})
		}
		times = append(times, time.Since(t0))
		if err != nil {
			return nil, fmt.Errorf("commit %d: %w", i, err)
		}
		if sha != want {
			return nil, fmt.Errorf("commit %d: sha %s, want %s", i, sha, want)
		}
		committed = append(committed, sha)
		after()
	}
	if cpu1 := cpuTime(); cpu0 >= 0 && cpu1 >= 0 {
		r.cpu = (cpu1 - cpu0) / time.Duration(len(times))
	} else {
		r.cpu = -1
	}
	r.commits = len(times)
	var total time.Duration
	for _, t := range times {
		total += t
	}
	r.mean = total / time.Duration(len(times))
	slices.Sort(times)
	r.p50, r.p99, r.maxC = pct(times, 50), pct(times, 99), times[len(times)-1]
	return committed, nil
}

// baseline times the same commits into an empty store with no cap: no
// eviction, so what is left is a commit's fixed cost (the temp file, its fsync,
// the rename, the Pebble write), which the sizes' figures are read against.
func baseline(o options, tmp string) (result, error) {
	r := result{n: 0}
	dir := filepath.Join(tmp, "data-empty")
	defer os.RemoveAll(dir)
	fmt.Printf("== baseline: an empty store with no cap (no eviction)\n")
	st, err := cache.Open(dir, cache.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return r, err
	}
	defer st.Close()
	bench.WaitReady(st)
	if _, err := commitMany(o, st, 1000, o.blobSize, &r, func() {}); err != nil {
		return r, err
	}
	fmt.Printf("  %d commits, no eviction:  mean %s  p50 %s  p99 %s  max %s  CPU %s per commit\n",
		r.commits, round(r.mean), round(r.p50), round(r.p99), round(r.maxC), cpuString(r.cpu))
	return r, nil
}

func cpuString(d time.Duration) string {
	if d < 0 {
		return "n/a"
	}
	return round(d).String()
}

// checkAfter checks the store after the commits: at most MaxSize with exactly N
// blobs (waiting up to 5 s, in case eviction is done in the background), every
// committed blob present, and no blob evicted out of LRU order.
func checkAfter(st *cache.Store, blobs *bench.Blobs, order []int, committed []string, opened []atomic.Bool, commits int) error {
	n := len(blobs.SHAs)
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := checkUsage(st, n, blobs.Total())
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after the commits: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, sha := range committed {
		if !st.Has(sha) {
			return fmt.Errorf("blob %s, committed in this run, was evicted (the newest blobs must stay)", sha)
		}
	}
	// LRU order. Blobs were touched in `order`, so their access times rise along
	// it; the openers then made the blobs they opened the newest. A victim is the
	// oldest blob not open at that moment, and a blob open then was opened, so
	// it counts in D (the distinct blobs the openers opened). At every eviction,
	// of the first commits+D blobs of `order`, at most commits-1 are evicted and
	// at most D have a new time, so one at least keeps its old time, is not
	// open, and is older than every blob after them (and than every blob
	// committed here). So every evicted blob is among the first commits+D.
	d, evicted, worst := 0, 0, -1
	for _, i := range order {
		if opened[i].Load() {
			d++
		}
	}
	for pos, i := range order {
		if !st.Has(blobs.Name(i)) {
			evicted++
			worst = pos
		}
	}
	bound := commits + d
	fmt.Printf("  after: %d blobs, %d bytes <= MaxSize %d; %d of the first %d evicted, the youngest at LRU position %d (bound %d = commits + %d opened): ok\n",
		n, blobs.Total(), blobs.Total(), evicted, n, worst, bound, d)
	if evicted != commits {
		return fmt.Errorf("%d of the first %d blobs evicted, want %d (one per commit)", evicted, n, commits)
	}
	if worst >= bound {
		return fmt.Errorf("blob at LRU position %d evicted: not the least recently used (bound %d)", worst, bound)
	}
	return nil
}

func checkUsage(st *cache.Store, n int, total int64) error {
	bytes, count, limit := st.Usage()
	if bytes > limit || count != n || bytes != total {
		return fmt.Errorf("usage %d bytes in %d blobs (cap %d), want %d bytes in %d", bytes, count, limit, total, n)
	}
	return nil
}

func printSummary(base result, rs []result) {
	fmt.Println("summary (times per commit; \"open\" columns are the concurrent OpenBlob calls; 0 = the baseline, no cap)")
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "blobs\tcreate\tadopt\tfrom table\tcommits\tmean\tp50\tp99\tmax\tCPU\topen p50\topen p99\topen max")
	dash := func(r result, d time.Duration) string {
		if r.n == 0 {
			return "-"
		}
		return round(d).String()
	}
	for _, r := range append([]result{base}, rs...) {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.n, dash(r, r.create), dash(r, r.adopt), dash(r, r.reopen),
			r.commits, round(r.mean), round(r.p50), round(r.p99), round(r.maxC), cpuString(r.cpu),
			dash(r, r.openP50), dash(r, r.openP99), dash(r, r.omax))
	}
	tw.Flush()
	for _, r := range rs {
		fmt.Printf("%d blobs: eviction adds %s to the mean commit (%s against the baseline's %s) and %s of CPU\n",
			r.n, round(r.mean-base.mean), round(r.mean), round(base.mean), cpuDiff(r.cpu, base.cpu))
	}
	first := rs[0]
	for _, r := range rs[1:] {
		fmt.Printf("%d vs %d blobs (%.0fx the cache): commit p50 %.2fx, mean %.2fx, p99 %.2fx, CPU %s; open p99 %.2fx  (flat = about 1.0x; target O(log n) per commit)\n",
			r.n, first.n, float64(r.n)/float64(first.n),
			ratio(r.p50, first.p50), ratio(r.mean, first.mean), ratio(r.p99, first.p99), cpuRatio(r.cpu, first.cpu), ratio(r.openP99, first.openP99))
	}
}

func cpuDiff(a, b time.Duration) string {
	if a < 0 || b < 0 {
		return "n/a"
	}
	return round(a - b).String()
}

func cpuRatio(a, b time.Duration) string {
	if a < 0 || b <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2fx", float64(a)/float64(b))
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// pct is the p-th percentile of sorted (nearest rank).
func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	k := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[min(max(k, 0), len(sorted)-1)]
}

// round keeps three significant figures or so, for columns that read at a glance
// (differences from the baseline may be negative).
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
	case a >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	case a >= 10*time.Microsecond:
		return d.Round(100 * time.Nanosecond)
	default:
		return d.Round(10 * time.Nanosecond)
	}
}

// openSettled opens the store in dir and waits until it has squared its table
// with the files: returned is how long Open took, settled how long until then.
func openSettled(dir string, opts cache.Options) (st *cache.Store, returned, settled time.Duration, err error) {
	start := time.Now()
	if st, err = cache.Open(dir, opts); err != nil {
		return nil, 0, 0, err
	}
	returned = time.Since(start)
	bench.WaitReady(st)
	return st, returned, time.Since(start), nil
}
