// Command load compares condaproxy's hot path with nginx and a bare Go
// http.ServeContent server under wrk, on this machine, in one run:
//
//	go run ./bench/load [-duration 10s] [-connections 32] [-threads 2] [-rounds 1]
//
// It builds the benchmark channel (package bench) in a temp dir and starts three
// servers on 127.0.0.1:
//
//   - nginx, with its own minimal nginx.conf (sendfile, tcp_nopush, no access log),
//     root = the channel dir;
//   - a bare Go server (in this process): http.ServeContent from memory for the
//     4 KiB repodata.json, from an *os.File for the 1 MiB package;
//   - the real proxy: `go build ./cmd/condaproxy` into the temp dir, run as a
//     subprocess (`condaproxy serve -c`) with a temp config and data dir. Its one
//     channel's upstream is a file:// URL of the channel dir, so nothing but
//     loopback is involved.
//
// The proxy is warmed (repodata built, package filled) and every server's answers
// are checked (sha256) before wrk runs, so a broken path cannot look fast. Then wrk
// runs against the 1 MiB package (nginx, bare Go, proxy) and the 4 KiB
// repodata.json (bare Go, proxy, nginx) and a table of req/s and ratios is
// printed. wrk and the servers share the machine's cores: on a small machine the
// absolute figures are low and noisy; the ratios are the point.
//
// Every process it starts is stopped on exit, on error and on Ctrl-C.
//
// With -replicas it measures three replicas on redis-server and versitygw against
// the single node and nginx instead (replicas.go).
package main

import (
	"bytes"
	"cmp"
	"context"
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
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/condaproxy/condaproxy/bench"
)

var (
	duration    = flag.Duration("duration", 10*time.Second, "wrk duration of each run (1s..10m)")
	connections = flag.Int("connections", 32, "wrk connections (-c), 1..10000")
	threads     = flag.Int("threads", 2, "wrk threads (-t)")
	proxyBin    = flag.String("proxy-bin", "", "use this condaproxy binary instead of building ./cmd/condaproxy")
	rounds      = flag.Int("rounds", 1, "run every target this many times, in turn (1..20), and report medians")
	keep        = flag.Bool("keep", false, "keep the temp dir (configs, logs) and print its path")
)

// Targets the ratios are held to.
const (
	targetPkg      = 0.9 // proxy / nginx, 1 MiB package (issue 12)
	targetRepodata = 0.8 // proxy / nginx, 4 KiB repodata.json (issue 12)
)

func main() {
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: go run ./bench/load [flags]\n\n"+
			"Runs wrk against nginx, a bare Go ServeContent server and condaproxy on 127.0.0.1.\n"+
			"Needs nginx and wrk (apt-get install nginx wrk).\n"+
			"With -replicas: three replicas on redis-server and versitygw against the single node and nginx\n"+
			"(hot 1 MiB package, concurrent misses); see bench/README.md.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	if *duration < time.Second || *duration > 10*time.Minute || *connections < 1 || *connections > 10000 ||
		*threads < 1 || *threads > *connections || *rounds < 1 || *rounds > 20 || !validReplicaFlags() {
		fmt.Fprintln(os.Stderr, "load: want 1s <= -duration <= 10m, 1 <= -connections <= 10000, "+
			"1 <= -threads <= -connections, 1 <= -rounds <= 20, 1 <= -miss-clients <= 200, "+
			"1 <= -miss-files <= -miss-clients")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	var err error
	if *replicasMode {
		err = runReplicas(ctx)
	} else {
		err = run(ctx)
	}
	interrupted := ctx.Err() != nil
	stop()
	if err != nil {
		if interrupted {
			err = fmt.Errorf("interrupted (%v)", err)
		}
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) (err error) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return errors.New("wrk not found in PATH: apt-get install nginx wrk")
	}
	nginx, err := bench.FindNginx("apt-get install nginx wrk")
	if err != nil {
		return err
	}
	tmp, cleanup, err := bench.ServedTempDir("", "condaproxy-load-", "load", *keep)
	if err != nil {
		return err
	}
	defer cleanup()

	ch, err := bench.BuildChannel(filepath.Join(tmp, "channel"))
	if err != nil {
		return err
	}
	modTime := time.Now()
	if info, err := os.Stat(ch.Path(ch.Repodata)); err == nil {
		modTime = info.ModTime()
	}

	// The proxy binary first: a build failure should not leave servers behind.
	bin := *proxyBin
	if bin == "" {
		bin = filepath.Join(tmp, "condaproxy")
		if err := bench.BuildProxy(ctx, bin, "", "load: go build ./cmd/condaproxy"); err != nil {
			return err
		}
	}

	// nginx.
	nginxAddr, err := bench.FreeAddr()
	if err != nil {
		return err
	}
	ngx, err := bench.StartNginx("load", nginx, filepath.Join(tmp, "nginx"), nginxAddr, ch.Dir)
	if err != nil {
		return err
	}
	defer ngx.Stop()

	// Bare Go, in this process.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	bare := &http.Server{Handler: bench.BareHandler(ch, modTime), ReadHeaderTimeout: 10 * time.Second}
	go bare.Serve(ln)
	defer bare.Close()
	bareAddr := ln.Addr().String()

	// The proxy.
	proxyAddr, err := bench.FreeAddr()
	if err != nil {
		return err
	}
	px, err := startProxy(bin, tmp, proxyAddr, ch.Dir)
	if err != nil {
		return err
	}
	defer px.Stop()

	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()
	base := map[string]string{
		"nginx":      "http://" + nginxAddr + "/",
		"bare Go":    "http://" + bareAddr + "/",
		"condaproxy": "http://" + proxyAddr + "/" + bench.ChannelName + "/",
	}
	if err := bench.WaitHTTP(ctx, client, base["nginx"]+ch.Repodata, ngx); err != nil {
		return fmt.Errorf("nginx: %w (log: %s)", err, ngx.Log)
	}
	if err := bench.WaitHTTP(ctx, client, "http://"+proxyAddr+"/healthz", px); err != nil {
		return fmt.Errorf("condaproxy: %w (log: %s)", err, px.Log)
	}

	// Warm the proxy: repodata (built on first ask), noarch, the package (the fill),
	// and a few hits more so its memory tier holds them.
	fmt.Fprintln(os.Stderr, "load: warming condaproxy")
	for i := 0; i < 4; i++ {
		for _, rel := range []string{ch.Repodata, ch.Noarch, ch.Pkg} {
			if _, err := get(client, base["condaproxy"]+rel); err != nil {
				return fmt.Errorf("warming condaproxy: %w (log: %s)", err, px.Log)
			}
		}
	}
	time.Sleep(100 * time.Millisecond)

	type target struct {
		file, server, url string
		size              int
	}
	var targets []target
	for _, server := range []string{"nginx", "bare Go", "condaproxy"} {
		targets = append(targets, target{"1 MiB package", server, base[server] + ch.Pkg, len(ch.PkgBytes)})
	}
	for _, server := range []string{"bare Go", "condaproxy", "nginx"} {
		targets = append(targets, target{"4 KiB repodata.json", server, base[server] + ch.Repodata, len(ch.RepodataBytes)})
	}
	// Check every answer's bytes once, before any timing.
	for _, t := range targets {
		body, err := get(client, t.url)
		if err != nil {
			return fmt.Errorf("%s: %w", t.server, err)
		}
		want := ch.PkgBytes
		if strings.HasSuffix(t.url, ch.Repodata) {
			want = ch.RepodataBytes
		}
		if !bytes.Equal(body, want) && !(t.server == "condaproxy" && sameJSON(body, want)) {
			return fmt.Errorf("%s sent %s with sha256 %s, want %s", t.server, t.url, bench.SHA256(body), bench.SHA256(want))
		}
	}

	cpus := runtime.NumCPU()
	loadBefore := bench.LoadAvg()
	fmt.Printf("condaproxy load test, %s, %d CPUs, wrk -t%d -c%d -d%s per run\n",
		time.Now().Format("2006-01-02 15:04"), cpus, *threads, *connections, *duration)
	fmt.Printf("NOTE: wrk and the server under test share these %d CPUs, so absolute req/s are\n"+
		"lower than on a dedicated machine; compare the ratios.\n", cpus)
	fmt.Printf("load average before the runs: %s\n\n", loadBefore)

	// Each round runs every target once, in turn, so a burst of outside load hits
	// all servers alike; with several rounds the table shows the median.
	runs := map[string][]wrkResult{} // by file+"|"+server
	n := 0
	for round := 1; round <= *rounds; round++ {
		for _, t := range targets {
			if n > 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(time.Second): // let sockets in TIME_WAIT and the CPUs settle
				}
			}
			n++
			fmt.Fprintf(os.Stderr, "load: round %d/%d: wrk %s from %s (%s)\n", round, *rounds, t.file, t.server, *duration)
			res, err := runWrk(ctx, wrk, t.url)
			if err != nil {
				return fmt.Errorf("wrk %s: %w", t.url, err)
			}
			runs[t.file+"|"+t.server] = append(runs[t.file+"|"+t.server], res)
		}
	}
	results := map[string]map[string]wrkResult{}
	for _, t := range targets {
		if results[t.file] == nil {
			results[t.file] = map[string]wrkResult{}
		}
		results[t.file][t.server] = median(runs[t.file+"|"+t.server])
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	rangeHdr := ""
	if *rounds > 1 {
		rangeHdr = "req/s range\t"
	}
	fmt.Fprintln(tw, "file\tserver\t   req/s\t   MiB/s\tavg latency\t"+rangeHdr+"socket errors")
	for _, t := range targets {
		r := results[t.file][t.server]
		rng := ""
		if *rounds > 1 {
			lo, hi := r.rps, r.rps
			for _, x := range runs[t.file+"|"+t.server] {
				lo, hi = min(lo, x.rps), max(hi, x.rps)
			}
			rng = fmt.Sprintf("%.0f-%.0f\t", lo, hi)
		}
		fmt.Fprintf(tw, "%s\t%s\t%8.0f\t%8.1f\t%11s\t%s%s\n", t.file, t.server, r.rps,
			r.rps*float64(t.size)/(1<<20), r.latency, rng, r.errs)
	}
	tw.Flush()
	if *rounds > 1 {
		fmt.Printf("(median of %d rounds; ratios are of the medians)\n", *rounds)
	}
	fmt.Println()
	pkg := results["1 MiB package"]
	rd := results["4 KiB repodata.json"]
	printRatio("1 MiB package   condaproxy / nginx  ", pkg["condaproxy"].rps, pkg["nginx"].rps, targetPkg)
	printRatio("4 KiB repodata  condaproxy / nginx  ", rd["condaproxy"].rps, rd["nginx"].rps, targetRepodata)
	// Bare Go (net/http's ServeContent from memory and sendfile) is what the
	// standard library's server alone reaches on this machine: the ceiling for
	// any handler on it, and where the proxy's own cost shows.
	fmt.Printf("(reference: 1 MiB condaproxy / bare Go %.2fx, bare Go / nginx %.2fx; 4 KiB condaproxy / bare Go %.2fx, bare Go / nginx %.2fx)\n",
		ratio(pkg["condaproxy"].rps, pkg["bare Go"].rps), ratio(pkg["bare Go"].rps, pkg["nginx"].rps),
		ratio(rd["condaproxy"].rps, rd["bare Go"].rps), ratio(rd["bare Go"].rps, rd["nginx"].rps))
	fmt.Printf("load average after the runs: %s (well above %d before or after: other work shared the\n"+
		"CPUs and the figures are not comparable between runs)\n", bench.LoadAvg(), cpus)

	// The proxy must still be healthy and right after the load.
	if body, err := get(client, base["condaproxy"]+ch.Pkg); err != nil || bench.SHA256(body) != ch.PkgSHA256 {
		return fmt.Errorf("condaproxy after the load: package wrong or missing (err %v; log: %s)", err, px.Log)
	}
	return nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func printRatio(label string, a, b, target float64) {
	r := ratio(a, b)
	verdict := "meets target"
	if r < target {
		verdict = "BELOW target"
	}
	fmt.Printf("%s  %.3fx   target >= %.1fx   %s\n", label, r, target, verdict)
}

func startProxy(bin, tmp, addr, channelDir string) (*bench.Proc, error) {
	cfg := fmt.Sprintf(`# condaproxy load test
listen: %q
data: %q
log:
  level: info
  format: json
channels:
  - name: %s
    upstreams:
      - url: %q
`, addr, filepath.Join(tmp, "data"), bench.ChannelName, "file://"+filepath.ToSlash(channelDir))
	cfgPath := filepath.Join(tmp, "condaproxy.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	return bench.StartProc("load", "condaproxy", filepath.Join(tmp, "condaproxy.log"), exec.Command(bin, "serve", "-c", cfgPath))
}

func get(c *http.Client, url string) ([]byte, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return body, nil
}

// sameJSON reports whether a and b are the same JSON document.
func sameJSON(a, b []byte) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

// median is the run with the median req/s (the lower middle one of an even count).
func median(rs []wrkResult) wrkResult {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b wrkResult) int { return cmp.Compare(a.rps, b.rps) })
	return s[(len(s)-1)/2]
}

type wrkResult struct {
	rps     float64
	latency string // wrk's average
	errs    string // "-" or what wrk reported
}

var (
	reqsRe    = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	latencyRe = regexp.MustCompile(`(?m)^\s+Latency\s+(\S+)`)
	non2xxRe  = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses:\s+(\d+)`)
	sockRe    = regexp.MustCompile(`(?m)^\s*Socket errors:\s+(.*)$`)
)

func runWrk(ctx context.Context, wrk, url string) (wrkResult, error) {
	ctx, cancel := context.WithTimeout(ctx, *duration+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, wrk, "-t", strconv.Itoa(*threads), "-c", strconv.Itoa(*connections),
		"-d", strconv.Itoa(int(duration.Seconds()))+"s", "--timeout", "10s", url)
	cmd.SysProcAttr = bench.SysProcAttr()
	cmd.Cancel = func() error { return bench.SignalGroup(cmd.Process.Pid, syscall.SIGKILL) }
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			return wrkResult{}, ctx.Err()
		}
		return wrkResult{}, fmt.Errorf("%w\n%s", err, out)
	}
	m := reqsRe.FindSubmatch(out)
	if m == nil {
		return wrkResult{}, fmt.Errorf("no Requests/sec in wrk's output:\n%s", out)
	}
	rps, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		return wrkResult{}, err
	}
	res := wrkResult{rps: rps, latency: "?", errs: "-"}
	if m := latencyRe.FindSubmatch(out); m != nil {
		res.latency = string(m[1])
	}
	if m := non2xxRe.FindSubmatch(out); m != nil {
		// Error answers are cheap: counting them would flatter a broken server.
		return wrkResult{}, fmt.Errorf("%s answers were not 2xx or 3xx:\n%s", m[1], out)
	}
	var errs []string
	if m := sockRe.FindSubmatch(out); m != nil {
		errs = append(errs, "socket: "+string(m[1]))
	}
	if len(errs) > 0 {
		res.errs = strings.Join(errs, "; ")
	}
	return res, nil
}
