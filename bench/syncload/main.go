//go:build unix

// Command syncload measures `condaproxy sync` against a parallel curl of the same
// packages from the same fast upstream, on this machine, in one run:
//
//	go run ./bench/syncload [-packages 400] [-jobs 4,8] [-rounds 3] [-upstream nginx|go]
//	                        [-proxy-bin BIN] [-also NAME=BIN]... [-profile DIR] [-keep]
//
// The target it checks (from the issue): a sync of many packages from a fast
// upstream runs at >= 0.8x the rate of a parallel curl of the same files.
//
// It builds a miss channel (bench.BuildMissChannel: -packages distinct 1 MiB
// packages listed in one linux-64/repodata.json) in a temp dir and serves it on
// 127.0.0.1 with nginx (its own nginx.conf in the temp dir: sendfile, keep-alive,
// no access log) when nginx is found, else with a Go http.FileServer in this
// process. Both contenders fetch from that one server, so the upstream's cost is
// the same for both. Then, for each -jobs value J and each round, in turn:
//
//   - curl: one `curl --parallel --parallel-immediate --parallel-max J` process
//     fetching every package URL into files of a fresh directory (a -K config
//     lists the URLs and outputs). Timed from start to exit. Afterwards, untimed:
//     every file's size and sha256 are checked, then (reference only) the files are
//     fsynced, J at a time, and that time is reported as "+fsync";
//   - condaproxy: `condaproxy sync -c <cfg> --jobs J` (the binary built from
//     ./cmd/condaproxy, or -proxy-bin) with a fresh, empty data directory, so every
//     round is a cold cache. Timed from start to exit: process start, opening the
//     store, the repodata fetch and cut, the shards, every package (fetch,
//     sha256+md5, fsync, index) and the close. Afterwards, untimed: the exit status,
//     the summary line (fetched N, 0 failed) and every package's blob in
//     <data>/blobs/ with its size are checked.
//
// The contenders take turns going first from round to round. Between runs the
// output is deleted and the file systems synced (untimed), so one run's dirty
// pages are not written back during the next one.
//
// -also NAME=BIN (repeatable) adds another condaproxy binary, reported as
// sync:NAME, to the same rounds: a what-if build (made outside the work tree, or
// with go build -overlay) measured against the same curl on the same machine
// state, to see what a change would buy before making it.
//
// It prints one line per run, then per J the medians, MB/s (10^6 bytes),
// packages/s and the ratio sync rate / curl rate against the 0.8x target. sync
// verifies sha256 and md5 and fsyncs every blob before it counts a package; curl
// verifies nothing and leaves its files in the page cache: the output says so,
// and the "+fsync" column shows what durability alone would cost curl.
//
// With -profile DIR it then builds a second binary with a CPU profile and an
// execution trace hooked into main (a go build -overlay: the work tree is not
// touched), runs one more cold sync with each, writes cpu.pprof and trace.out in
// DIR, and prints `go tool pprof -top` of the CPU profile and of the trace's
// blocking profiles (syscall: fsync, fdatasync, writes; sync: locks and channels;
// net). The profiled binary is built from the work tree, even with -proxy-bin.
//
// Every server binds 127.0.0.1; every process it starts is stopped on exit, on
// error and on Ctrl-C.
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/condaproxy/condaproxy/bench"
)

var (
	packages = flag.Int("packages", 400, "distinct 1 MiB packages in the channel (1..10000)")
	jobsFlag = flag.String("jobs", "4,8", "parallelism, comma-separated: curl --parallel-max J and sync --jobs J (1..64 each)")
	rounds   = flag.Int("rounds", 3, "runs of each contender per -jobs value (1..20); medians are reported")
	upstream = flag.String("upstream", "", "the fast upstream: nginx or go (default: nginx if found, else go)")
	proxyBin = flag.String("proxy-bin", "", "use this condaproxy binary instead of building ./cmd/condaproxy")
	tmpBase  = flag.String("dir", "", "make the temp dir here (default $TMPDIR): curl's files and the data dirs are written to it")
	profile  = flag.String("profile", "", "after the rounds, profile one cold sync (CPU, then execution trace) into this directory")
	keep     = flag.Bool("keep", false, "keep the temp dir (configs, logs) and print its path")
	also     alsoFlag
)

func init() {
	flag.Var(&also, "also", "NAME=BIN: also time this condaproxy binary (a what-if build) in the same rounds, as sync:NAME (repeatable)")
}

// alsoFlag collects -also NAME=BIN.
type alsoFlag []struct{ name, bin string }

func (a *alsoFlag) String() string { return fmt.Sprint(len(*a)) }
func (a *alsoFlag) Set(v string) error {
	name, bin, ok := strings.Cut(v, "=")
	if !ok || name == "" || bin == "" || strings.ContainsAny(name, "/ ") {
		return fmt.Errorf("want NAME=BIN, got %q", v)
	}
	if _, err := os.Stat(bin); err != nil {
		return err
	}
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	*a = append(*a, struct{ name, bin string }{name, bin})
	return nil
}

// target: sync's rate over curl's, from the issue.
const target = 0.8

const channelName = "miss"

func main() {
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: go run ./bench/syncload [flags]\n\n"+
			"Times `condaproxy sync` (cold cache) against a parallel curl of the same packages\n"+
			"from one fast upstream on 127.0.0.1 (nginx if found, else a Go file server).\n"+
			"Needs curl; see bench/README.md.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	jobs, err := parseJobs(*jobsFlag)
	if flag.NArg() > 0 || err != nil || *packages < 1 || *packages > 10000 || *rounds < 1 || *rounds > 20 ||
		(*upstream != "" && *upstream != "nginx" && *upstream != "go") {
		if err != nil {
			fmt.Fprintln(os.Stderr, "syncload:", err)
		}
		fmt.Fprintln(os.Stderr, "syncload: want 1 <= -packages <= 10000, -jobs a list of 1..64, 1 <= -rounds <= 20, -upstream nginx or go")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err = run(ctx, jobs)
	interrupted := ctx.Err() != nil
	stop()
	if err != nil {
		if interrupted {
			err = fmt.Errorf("interrupted (%v)", err)
		}
		fmt.Fprintln(os.Stderr, "syncload:", err)
		os.Exit(1)
	}
}

func parseJobs(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		j, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || j < 1 || j > 64 { // sync's own bounds for --jobs
			return nil, fmt.Errorf("-jobs %q: want numbers 1..64", s)
		}
		out = append(out, j)
	}
	return out, nil
}

// result is one timed run.
type result struct {
	tool  string // "curl", "sync" or "sync:NAME" (-also)
	jobs  int
	round int
	wall  time.Duration
	cpu   time.Duration // user+system of the process (curl, or condaproxy)
	setup time.Duration // sync: start until it printed "fetching N files" (repodata, shards done)
	fsync time.Duration // curl: untimed reference, fsync of its files after it exited
}

func run(ctx context.Context, jobs []int) error {
	curl, err := exec.LookPath("curl")
	if err != nil {
		return errors.New("curl not found in PATH (apt-get install curl)")
	}
	kind := *upstream
	nginx, nginxErr := bench.FindNginx("apt-get install nginx, or -upstream go")
	if kind == "" {
		kind = "go"
		if nginxErr == nil {
			kind = "nginx"
		}
	}
	if kind == "nginx" && nginxErr != nil {
		return nginxErr
	}

	tmp, cleanup, err := bench.ServedTempDir(*tmpBase, "condaproxy-syncload-", "syncload", *keep)
	if err != nil {
		return err
	}
	defer cleanup()

	fmt.Fprintf(os.Stderr, "syncload: writing %d packages of 1 MiB\n", *packages)
	ch, err := bench.BuildMissChannel(filepath.Join(tmp, "channel"), *packages)
	if err != nil {
		return err
	}
	var total int64
	for _, p := range ch.Pkgs {
		total += p.Size
	}

	// The binary before any server, so a build failure leaves nothing behind.
	bin := *proxyBin
	if bin == "" {
		bin = filepath.Join(tmp, "condaproxy")
		if err := buildProxy(ctx, bin, ""); err != nil {
			return err
		}
	}

	var base string // the upstream's URL, no trailing slash
	upstreamDesc := ""
	switch kind {
	case "nginx":
		addr, err := bench.FreeAddr()
		if err != nil {
			return err
		}
		ngx, err := bench.StartNginx("syncload", nginx, filepath.Join(tmp, "nginx"), addr, ch.Dir)
		if err != nil {
			return err
		}
		defer ngx.Stop()
		base = "http://" + addr
		upstreamDesc = "nginx (" + nginxVersion(nginx) + ", sendfile, keep-alive, its own process)"
		if err := waitReady(ctx, base+"/"+ch.Repodata, ngx); err != nil {
			return fmt.Errorf("nginx: %w (log: %s)", err, ngx.Log)
		}
	case "go":
		// In this process: it is idle but for the server while a contender runs.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: http.FileServer(http.Dir(ch.Dir)), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		base = "http://" + ln.Addr().String()
		upstreamDesc = "Go http.FileServer in the harness process (sendfile)"
		if err := waitReady(ctx, base+"/"+ch.Repodata, nil); err != nil {
			return fmt.Errorf("go file server: %w", err)
		}
	}

	curlVersion := "curl"
	if out, err := exec.Command(curl, "--version").Output(); err == nil {
		curlVersion = strings.Join(strings.Fields(strings.SplitN(string(out), "\n", 2)[0])[:2], " ")
	}
	fmt.Printf("syncload: %d packages x 1 MiB = %.1f MB, upstream %s at %s\n", len(ch.Pkgs), float64(total)/1e6, upstreamDesc, base)
	fmt.Printf("cpus %d, %s, %s, temp dir on %s; load average before: %s\n",
		runtime.NumCPU(), runtime.Version(), curlVersion, tmp, bench.LoadAvg())
	fmt.Println("curl verifies nothing and does not fsync (its files stay in the page cache); sync checks size,")
	fmt.Println("sha256 and md5 and fsyncs every blob before it counts it. \"+fsync\" (curl rows) is an untimed")
	fmt.Println("reference: fsyncing curl's files afterwards, J at a time. \"setup\" (sync rows): start until")
	fmt.Println("sync printed \"fetching N files\" (store open, repodata fetched and cut, shards built);")
	fmt.Println("\"then\": the rate of the rest (packages fetched, verified, fsynced, indexed; the close).")
	fmt.Println()
	// The contenders: curl, the sync under test, and any -also builds (what-if
	// binaries measured in the same rounds, on the same machine state).
	type contender struct{ name, bin string }
	contenders := []contender{{"curl", ""}, {"sync", bin}}
	for _, a := range also {
		contenders = append(contenders, contender{"sync:" + a.name, a.bin})
	}
	width := 5
	for _, c := range contenders {
		width = max(width, len(c.name))
	}
	fmt.Printf("%-5s %-4s %-*s %9s %8s %8s %7s  %s\n", "round", "jobs", width, "tool", "wall", "MB/s", "pkgs/s", "cpu", "notes")

	var results []result
	for r := 1; r <= *rounds; r++ {
		for _, j := range jobs {
			// Rotate who goes first from round to round, so no contender always
			// runs on a machine another one just warmed (or loaded).
			k := (r - 1) % len(contenders)
			order := append(slices.Clone(contenders[k:]), contenders[:k]...)
			for _, c := range order {
				if err := ctx.Err(); err != nil {
					return err
				}
				var res result
				var err error
				dir := filepath.Join(tmp, fmt.Sprintf("%s-j%d-r%d", strings.ReplaceAll(c.name, ":", "-"), j, r))
				if c.name == "curl" {
					res, err = runCurl(ctx, curl, base, ch, j, dir)
				} else {
					res, err = runSync(ctx, c.bin, nil, base, ch, j, dir)
				}
				// Untimed: drop the run's output and write back whatever is dirty, so
				// the next run starts on a clean page cache and an idle disk.
				if !*keep || err == nil {
					os.RemoveAll(dir)
				}
				syscall.Sync()
				if err != nil {
					return fmt.Errorf("round %d, jobs %d, %s: %w", r, j, c.name, err)
				}
				res.tool, res.round = c.name, r
				results = append(results, res)
				printRun(res, width, total, len(ch.Pkgs))
			}
		}
	}
	fmt.Printf("load average after: %s\n\n", bench.LoadAvg())

	fmt.Printf("%-4s %-*s %9s %8s %8s %7s %11s  %s\n", "jobs", width, "tool", "wall", "MB/s", "pkgs/s", "cpu", "wall range", "")
	for _, j := range jobs {
		c := pick(results, "curl", j)
		cw, cf := median(walls(c)), median(fsyncs(c))
		row := func(tool string, rs []result, note string) {
			w := median(walls(rs))
			fmt.Printf("%-4d %-*s %9s %8.1f %8.1f %6.0f%% %11s  %s\n", j, width, tool, w.Round(time.Millisecond),
				float64(total)/1e6/w.Seconds(), float64(len(ch.Pkgs))/w.Seconds(),
				100*median(cpus(rs)).Seconds()/w.Seconds(), rangeOf(walls(rs)), note)
		}
		row("curl", c, fmt.Sprintf("+fsync %s", cf.Round(time.Millisecond)))
		for _, x := range contenders[1:] {
			s := pick(results, x.name, j)
			sw := median(walls(s))
			su := median(setups(s))
			row(x.name, s, fmt.Sprintf("setup %s, then %.1f MB/s", su.Round(time.Millisecond), float64(total)/1e6/(sw-su).Seconds()))
			ratio := cw.Seconds() / sw.Seconds() // a rate ratio: the same bytes, so the inverse of the times
			verdict := "meets target"
			if ratio < target {
				verdict = "MISSES target"
			}
			fmt.Printf("     %s / curl rate %.3fx   target >= %.1fx   %s   (reference: %s / (curl + fsync) %.3fx)\n",
				x.name, ratio, target, verdict, x.name, (cw+cf).Seconds()/sw.Seconds())
		}
	}
	fmt.Printf("(median of %d round(s); cpu = user+system time of the curl or condaproxy process / wall, 100%% = one core)\n", *rounds)

	if *profile != "" {
		return profileSync(ctx, base, ch, jobs[0], tmp)
	}
	return nil
}

func printRun(r result, width int, total int64, n int) {
	note := fmt.Sprintf("setup %s, then %.1f MB/s; %d blobs in the cache, sizes checked",
		r.setup.Round(time.Millisecond), float64(total)/1e6/(r.wall-r.setup).Seconds(), n)
	if r.tool == "curl" {
		note = fmt.Sprintf("+fsync %s; %d files, sizes and sha256 checked", r.fsync.Round(time.Millisecond), n)
	}
	fmt.Printf("%-5d %-4d %-*s %9s %8.1f %8.1f %6.0f%%  %s\n", r.round, r.jobs, width, r.tool, r.wall.Round(time.Millisecond),
		float64(total)/1e6/r.wall.Seconds(), float64(n)/r.wall.Seconds(), 100*r.cpu.Seconds()/r.wall.Seconds(), note)
}

// runCurl fetches every package with one curl process, J transfers at a time,
// into dir, and checks what it wrote.
func runCurl(ctx context.Context, curl, base string, ch *bench.MissChannel, jobs int, dir string) (result, error) {
	res := result{tool: "curl", jobs: jobs}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	// A -K config file rather than argv: thousands of URLs would not fit.
	var cfg strings.Builder
	for _, p := range ch.Pkgs {
		fmt.Fprintf(&cfg, "url = %q\noutput = %q\n", base+"/"+p.Path, filepath.Join(dir, path.Base(p.Path)))
	}
	cfgPath := dir + ".curlrc"
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		return res, err
	}
	defer os.Remove(cfgPath)
	// --parallel-immediate: open J connections at once instead of waiting to see
	// whether the first one multiplexes (it cannot: plain HTTP/1.1), which only
	// makes the baseline faster. --fail: an HTTP error is an error.
	cmd := exec.CommandContext(ctx, curl, "--parallel", "--parallel-immediate", "--parallel-max", strconv.Itoa(jobs),
		"--fail", "--silent", "--show-error", "-K", cfgPath)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	res.wall = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("curl: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	res.cpu = cpuTime(cmd.ProcessState)

	// Untimed: every byte right, then (reference) what making them durable costs.
	files := make([]string, len(ch.Pkgs))
	for i, p := range ch.Pkgs {
		files[i] = filepath.Join(dir, path.Base(p.Path))
		if err := checkFile(files[i], p.Size, p.SHA256); err != nil {
			return res, err
		}
	}
	start = time.Now()
	if err := parallel(files, jobs, fsyncFile); err != nil {
		return res, err
	}
	res.fsync = time.Since(start)
	return res, nil
}

func checkFile(name string, size int64, sha string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return err
	}
	if n != size || hex.EncodeToString(h.Sum(nil)) != sha {
		return fmt.Errorf("%s: %d bytes, sha256 %x; want %d bytes, %s", name, n, h.Sum(nil), size, sha)
	}
	return nil
}

func fsyncFile(name string) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// parallel runs fn on every item, at most n at a time; the first error wins.
func parallel(items []string, n int, fn func(string) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		next  = make(chan string)
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range next {
				if err := fn(it); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, it := range items {
		next <- it
	}
	close(next)
	wg.Wait()
	return first
}

// syncSummary is sync's last line: "sync: 1 records served; fetched N files (...), M already there, K failed, in T".
var syncSummary = regexp.MustCompile(`sync: (\d+) records served; fetched (\d+) files .*, (\d+) already there.*, (\d+) failed, in `)

// runSync runs `condaproxy sync` on a fresh data dir (a cold cache) and checks the
// cache it leaves. env is added to the process's environment (the profile hooks).
func runSync(ctx context.Context, bin string, env []string, base string, ch *bench.MissChannel, jobs int, dir string) (result, error) {
	res := result{tool: "sync", jobs: jobs}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	data := filepath.Join(dir, "data")
	// platforms: [linux-64]: sync covers noarch and linux-64, where the channel
	// is, instead of probing channeldata.json and ten common subdirs upstream.
	cfg := fmt.Sprintf("data: %q\nlog:\n  level: warn\nchannels:\n  - name: %s\n    upstreams:\n      - url: %q\n    platforms: [linux-64]\n",
		data, channelName, base)
	cfgPath := filepath.Join(dir, "condaproxy.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return res, err
	}
	cmd := exec.CommandContext(ctx, bin, "sync", "-c", cfgPath, "--jobs", strconv.Itoa(jobs))
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return res, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return res, err
	}
	// stdout is not a terminal, so sync prints plain lines: "sync: fetching N
	// files" once every repodata is in (that instant ends the setup), progress
	// every 5 s, and the summary.
	var lines []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if res.setup == 0 && strings.HasPrefix(line, "sync: fetching ") {
			res.setup = time.Since(start)
		}
		lines = append(lines, line)
	}
	err = cmd.Wait()
	res.wall = time.Since(start)
	out := strings.Join(lines, "\n")
	if err != nil {
		return res, fmt.Errorf("condaproxy sync: %v\n%s\n%s", err, out, stderr.String())
	}
	res.cpu = cpuTime(cmd.ProcessState)

	// Untimed: the summary says every package was fetched and none failed, and
	// every package's blob is in the cache with its size.
	var m []string
	for _, l := range lines {
		if mm := syncSummary.FindStringSubmatch(l); mm != nil {
			m = mm
		}
	}
	if m == nil {
		return res, fmt.Errorf("condaproxy sync printed no summary:\n%s\n%s", out, stderr.String())
	}
	if m[1] != strconv.Itoa(len(ch.Pkgs)) || m[2] != strconv.Itoa(len(ch.Pkgs)) || m[3] != "0" || m[4] != "0" {
		return res, fmt.Errorf("condaproxy sync: want %d records served, %d fetched, 0 already there, 0 failed; it said %q",
			len(ch.Pkgs), len(ch.Pkgs), m[0])
	}
	for _, p := range ch.Pkgs {
		fi, err := os.Stat(filepath.Join(data, "blobs", p.SHA256[:2], p.SHA256))
		if err != nil {
			return res, fmt.Errorf("after sync: %s: %w", p.Path, err)
		}
		if fi.Size() != p.Size {
			return res, fmt.Errorf("after sync: %s: blob of %d bytes, want %d", p.Path, fi.Size(), p.Size)
		}
	}
	if res.setup == 0 {
		return res, fmt.Errorf("condaproxy sync never printed \"sync: fetching\":\n%s", out)
	}
	return res, nil
}

func cpuTime(ps *os.ProcessState) time.Duration {
	if ps == nil {
		return 0
	}
	return ps.UserTime() + ps.SystemTime()
}

// The profile hooks, added to package main of cmd/condaproxy through a go build
// -overlay (the work tree is not touched): main calls benchProfileStop before
// os.Exit, which would otherwise lose the profile's tail.
const profileHook = `package main

import (
	"os"
	"runtime/pprof"
	"runtime/trace"
)

var benchProfileStop = func() {}

func init() {
	var stops []func()
	if p := os.Getenv("CONDAPROXY_BENCH_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil && pprof.StartCPUProfile(f) == nil {
			stops = append(stops, func() { pprof.StopCPUProfile(); f.Close() })
		}
	}
	if p := os.Getenv("CONDAPROXY_BENCH_TRACE"); p != "" {
		if f, err := os.Create(p); err == nil && trace.Start(f) == nil {
			stops = append(stops, func() { trace.Stop(); f.Close() })
		}
	}
	benchProfileStop = func() {
		for _, s := range stops {
			s()
		}
	}
}
`

// profileSync builds the hooked binary and runs two more cold syncs with it: one
// with a CPU profile, one with an execution trace (separately: the trace slows
// the process down). It prints the top of the CPU profile and of the trace's
// blocking profiles: syscall (where goroutines waited in system calls: fsync,
// writes, reads), sync (locks, channels, condition variables) and net.
func profileSync(ctx context.Context, base string, ch *bench.MissChannel, jobs int, tmp string) error {
	dir, err := filepath.Abs(*profile)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "overlay"), 0o755); err != nil {
		return err
	}
	root, err := bench.ModuleRoot(ctx)
	if err != nil {
		return err
	}
	mainGo := filepath.Join(root, "cmd", "condaproxy", "main.go")
	src, err := os.ReadFile(mainGo)
	if err != nil {
		return err
	}
	const exit = "\tos.Exit(code)\n"
	if strings.Count(string(src), exit) != 1 {
		return fmt.Errorf("-profile: %s has no single %q to hook; profile by hand", mainGo, strings.TrimSpace(exit))
	}
	hooked := strings.Replace(string(src), exit, "\tbenchProfileStop()\n"+exit, 1)
	ovMain := filepath.Join(dir, "overlay", "main.go")
	ovHook := filepath.Join(dir, "overlay", "zz_benchprofile.go")
	if err := os.WriteFile(ovMain, []byte(hooked), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(ovHook, []byte(profileHook), 0o644); err != nil {
		return err
	}
	ov, _ := json.Marshal(map[string]any{"Replace": map[string]string{
		mainGo: ovMain,
		filepath.Join(root, "cmd", "condaproxy", "zz_benchprofile.go"): ovHook,
	}})
	ovPath := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(ovPath, ov, 0o644); err != nil {
		return err
	}
	bin := filepath.Join(dir, "condaproxy-profiled")
	if err := buildProxy(ctx, bin, ovPath); err != nil {
		return err
	}
	cpuOut, traceOut := filepath.Join(dir, "cpu.pprof"), filepath.Join(dir, "trace.out")
	fmt.Println()
	for _, p := range []struct{ name, env string }{
		{"cpu profile", "CONDAPROXY_BENCH_CPUPROFILE=" + cpuOut},
		{"execution trace", "CONDAPROXY_BENCH_TRACE=" + traceOut},
	} {
		runDir := filepath.Join(tmp, "profile-"+strings.ReplaceAll(p.name, " ", "-"))
		res, err := runSync(ctx, bin, []string{p.env}, base, ch, jobs, runDir)
		os.RemoveAll(runDir)
		syscall.Sync()
		if err != nil {
			return fmt.Errorf("-profile, %s: %w", p.name, err)
		}
		fmt.Printf("profiled sync (%s), jobs %d: wall %s, cpu %.0f%%, setup %s\n", p.name, jobs,
			res.wall.Round(time.Millisecond), 100*res.cpu.Seconds()/res.wall.Seconds(), res.setup.Round(time.Millisecond))
	}
	top := func(title string, args ...string) error {
		out, err := exec.CommandContext(ctx, "go", append([]string{"tool", "pprof", "-top", "-nodecount=30"}, args...)...).CombinedOutput()
		fmt.Printf("\n== %s: go tool pprof -top %s\n%s", title, strings.Join(args, " "), out)
		return err
	}
	if err := top("CPU", bin, cpuOut); err != nil {
		return err
	}
	for _, kind := range []string{"syscall", "sync", "net"} {
		prof := filepath.Join(dir, kind+".pprof")
		out, err := exec.CommandContext(ctx, "go", "tool", "trace", "-pprof="+kind, traceOut).Output()
		if err != nil {
			return fmt.Errorf("go tool trace -pprof=%s: %w", kind, err)
		}
		if err := os.WriteFile(prof, out, 0o644); err != nil {
			return err
		}
		if len(out) == 0 {
			fmt.Printf("\n== %s blocking: no samples\n", kind)
			continue
		}
		if err := top(kind+" blocking (from the trace)", prof); err != nil {
			return err
		}
	}
	fmt.Printf("\nprofiles in %s: go tool pprof -http=: %s %s; go tool trace %s\n", dir, bin, cpuOut, traceOut)
	return nil
}

func pick(rs []result, tool string, jobs int) []result {
	var out []result
	for _, r := range rs {
		if r.tool == tool && r.jobs == jobs {
			out = append(out, r)
		}
	}
	return out
}

func field(rs []result, f func(result) time.Duration) []time.Duration {
	out := make([]time.Duration, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

func walls(rs []result) []time.Duration {
	return field(rs, func(r result) time.Duration { return r.wall })
}
func cpus(rs []result) []time.Duration {
	return field(rs, func(r result) time.Duration { return r.cpu })
}
func setups(rs []result) []time.Duration {
	return field(rs, func(r result) time.Duration { return r.setup })
}
func fsyncs(rs []result) []time.Duration {
	return field(rs, func(r result) time.Duration { return r.fsync })
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func rangeOf(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f-%.2fs", slices.Min(ds).Seconds(), slices.Max(ds).Seconds())
}

func nginxVersion(nginx string) string {
	out, _ := exec.Command(nginx, "-v").CombinedOutput() // nginx prints its version on stderr
	s := strings.TrimSpace(string(out))
	if i := strings.LastIndex(s, "nginx/"); i >= 0 {
		return s[i:]
	}
	return "nginx"
}

// waitReady polls url until it answers 200, p (if any) exits, or 20 s pass
// (bench.WaitHTTP), through a client of its own.
func waitReady(ctx context.Context, url string, p *bench.Proc) error {
	c := &http.Client{Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	return bench.WaitHTTP(ctx, c, url, p)
}

// buildProxy builds ./cmd/condaproxy into bin (bench.BuildProxy), announcing
// the whole go command; overlay, if set, is a go build -overlay file.
func buildProxy(ctx context.Context, bin, overlay string) error {
	args := "build -o " + bin
	if overlay != "" {
		args += " -overlay " + overlay
	}
	return bench.BuildProxy(ctx, bin, overlay, "syncload: go "+args+" ./cmd/condaproxy")
}
