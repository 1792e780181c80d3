package main

// The -replicas mode: condaproxy as several replicas on an object store and Redis
// (README "Scale out"), against the single-node proxy and nginx, in one run.
//
//	go run ./bench/load -replicas [-duration 10s] [-rounds 3] [-miss-clients 24] [-miss-files 8]
//
// It starts, all on 127.0.0.1 and in a temp dir: nginx (as the default mode does),
// redis-server, versitygw (posix backend: the bucket is a directory under its
// root) behind a counting relay in this process, an upstream in this process (a Go
// file server of a synthetic channel that counts the requests it gets), one
// single-node condaproxy (local disk, as the default mode) and three replicas on
// that Redis and bucket. Then:
//
//  1. hot: wrk against the 1 MiB package from nginx, the single node and replica
//     A (local tier warm: the package fetched through A before timing, and checked
//     to be in A's local tier and in the object store), same file, rounds in turn
//     (the order rotated each round);
//     it prints req/s and the ratios replica/single and replica/nginx, with the
//     object store requests and Redis commands the replica caused while timed;
//  2. misses: -miss-clients clients released together ask for -miss-files cold
//     1 MiB packages (client i asks for file i mod files), spread across the three
//     replicas (client i asks replica i mod 3, so with 24 clients and 8 or 1 files
//     every file is asked of all three; with a multiple of 3 files each file would
//     stay on one replica), or all against replica A alone, or (as a
//     reference) against the single node; every trial uses files no server has
//     seen. It prints the wall time from release to the last byte of the last
//     answer, the upstream requests per file (it must be exactly one per file in
//     every configuration, or the run fails) and the ratio 3 replicas / 1 replica.
//
// Every answer is checked by sha256. Every process it starts is stopped on exit.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/condaproxy/condaproxy/bench"
)

var (
	replicasMode = flag.Bool("replicas", false, "measure replicas on an object store and Redis (hot 1 MiB and concurrent misses) instead")
	missClients  = flag.Int("miss-clients", 24, "with -replicas: concurrent clients of each miss trial (1..200)")
	missFiles    = flag.Int("miss-files", 8, "with -replicas: distinct cold 1 MiB files per miss trial (1..-miss-clients)")
)

const (
	s3Bucket    = "condaproxy-bench"
	s3Prefix    = "bench"
	s3Access    = "BENCHKEY12345"
	s3Secret    = "BENCHSECRET12345"
	s3Region    = "us-east-1"
	replicaN    = 3
	missTimeout = 2 * time.Minute // one miss request, at most
)

func validReplicaFlags() bool {
	return *missClients >= 1 && *missClients <= 200 && *missFiles >= 1 && *missFiles <= *missClients
}

// server is one condaproxy process of the run.
type server struct {
	name string
	base string // http://127.0.0.1:port
	data string
	*bench.Proc
}

func runReplicas(ctx context.Context) (err error) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return errors.New("wrk not found in PATH: apt-get install nginx wrk")
	}
	nginx, err := bench.FindNginx("apt-get install nginx wrk")
	if err != nil {
		return err
	}
	redisBin, err := exec.LookPath("redis-server")
	if err != nil {
		return errors.New("redis-server not found in PATH: apt-get install redis-server")
	}
	versitygw, err := findVersitygw(ctx)
	if err != nil {
		return err
	}
	tmp, cleanup, err := bench.ServedTempDir("", "condaproxy-replicas-", "load", *keep)
	if err != nil {
		return err
	}
	defer cleanup()

	ch, err := bench.BuildChannel(filepath.Join(tmp, "channel"))
	if err != nil {
		return err
	}
	configs := []string{"3 replicas", "1 replica", "single node"}
	if n := *rounds * len(configs) * *missFiles; n > 600 {
		return fmt.Errorf("the miss channel would hold %d MiB (-rounds x 3 x -miss-files): at most 600; lower -rounds or -miss-files", n)
	}
	mc, err := bench.BuildMissChannel(filepath.Join(tmp, "miss"), *rounds*len(configs)**missFiles)
	if err != nil {
		return err
	}

	bin := *proxyBin
	if bin == "" {
		bin = filepath.Join(tmp, "condaproxy")
		if err := bench.BuildProxy(ctx, bin, "", "load: go build ./cmd/condaproxy"); err != nil {
			return err
		}
	}

	// nginx, as in the default mode.
	nginxAddr, err := bench.FreeAddr()
	if err != nil {
		return err
	}
	ngx, err := bench.StartNginx("load", nginx, filepath.Join(tmp, "nginx"), nginxAddr, ch.Dir)
	if err != nil {
		return err
	}
	defer ngx.Stop()

	// Redis.
	redisAddr, err := bench.FreeAddr()
	if err != nil {
		return err
	}
	_, redisPort, _ := net.SplitHostPort(redisAddr)
	if err := os.MkdirAll(filepath.Join(tmp, "redis"), 0o755); err != nil {
		return err
	}
	rds, err := bench.StartProc("load", "redis-server", filepath.Join(tmp, "redis.log"), exec.Command(redisBin,
		"--port", redisPort, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", filepath.Join(tmp, "redis")))
	if err != nil {
		return err
	}
	defer rds.Stop()

	// The object store: versitygw's posix backend, the bucket a directory.
	s3Root := filepath.Join(tmp, "s3")
	if err := os.MkdirAll(filepath.Join(s3Root, s3Bucket), 0o755); err != nil {
		return err
	}
	s3Addr, err := bench.FreeAddr()
	if err != nil {
		return err
	}
	gw, err := bench.StartProc("load", "versitygw", filepath.Join(tmp, "versitygw.log"), exec.Command(versitygw,
		"--access", s3Access, "--secret", s3Secret, "--region", s3Region, "--port", s3Addr, "--quiet",
		"posix", s3Root))
	if err != nil {
		return err
	}
	defer gw.Stop()
	if err := waitDial(ctx, redisAddr, rds); err != nil {
		return fmt.Errorf("redis-server: %w (log: %s)", err, rds.Log)
	}
	if err := waitDial(ctx, s3Addr, gw); err != nil {
		return fmt.Errorf("versitygw: %w (log: %s)", err, gw.Log)
	}

	// The replicas talk to the object store through a relay that counts requests.
	relay, relayAddr, err := startS3Relay(s3Addr)
	if err != nil {
		return err
	}
	defer relay.close()

	// The upstream of the miss channel, counting what it is asked.
	up, upAddr, err := startUpstream(mc.Dir)
	if err != nil {
		return err
	}
	defer up.close()

	// The single node (local disk) and the replicas.
	var servers []*server
	defer func() {
		for _, s := range servers {
			s.Stop()
		}
	}()
	newServer := func(name string, shared bool) (*server, error) {
		dir := filepath.Join(tmp, strings.ReplaceAll(name, " ", "-"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		addr, err := bench.FreeAddr()
		if err != nil {
			return nil, err
		}
		s := &server{name: name, base: "http://" + addr, data: filepath.Join(dir, "data")}
		cfg := serverConfig(addr, s.data, ch.Dir, "http://"+upAddr, shared, redisAddr, "http://"+relayAddr)
		cfgPath := filepath.Join(dir, "condaproxy.yaml")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			return nil, err
		}
		s.Proc, err = bench.StartProc("load", name, filepath.Join(dir, "condaproxy.log"), exec.Command(bin, "serve", "-c", cfgPath))
		if err != nil {
			return nil, err
		}
		servers = append(servers, s)
		return s, nil
	}
	single, err := newServer("single node", false)
	if err != nil {
		return err
	}
	var reps []*server
	for i := 0; i < replicaN; i++ {
		r, err := newServer("replica "+string(rune('A'+i)), true)
		if err != nil {
			return err
		}
		reps = append(reps, r)
	}

	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()
	if err := bench.WaitHTTP(ctx, client, "http://"+nginxAddr+"/"+ch.Repodata, ngx); err != nil {
		return fmt.Errorf("nginx: %w (log: %s)", err, ngx.Log)
	}
	for _, s := range servers {
		if err := bench.WaitHTTP(ctx, client, s.base+"/healthz", s.Proc); err != nil {
			return fmt.Errorf("%s: %w (log: %s)", s.name, err, s.Log)
		}
	}

	// Warm: repodata of both channels on every server (so a miss below is only the
	// package), and the hot package on the single node and replica A.
	fmt.Fprintln(os.Stderr, "load: warming the single node and the replicas")
	for _, s := range servers {
		for _, u := range []string{
			s.base + "/" + bench.MissChannelName + "/" + mc.Repodata,
			s.base + "/" + bench.MissChannelName + "/" + mc.Noarch,
			s.base + "/" + bench.ChannelName + "/" + ch.Repodata,
			s.base + "/" + bench.ChannelName + "/" + ch.Noarch,
		} {
			if _, err := get(client, u); err != nil {
				return fmt.Errorf("warming %s: %w (log: %s)", s.name, err, s.Log)
			}
		}
	}
	hotRep := reps[0]
	for i := 0; i < 4; i++ {
		for _, s := range []*server{single, hotRep} {
			if _, err := get(client, s.base+"/"+bench.ChannelName+"/"+ch.Pkg); err != nil {
				return fmt.Errorf("warming %s: %w (log: %s)", s.name, err, s.Log)
			}
		}
	}
	time.Sleep(200 * time.Millisecond)
	// The replica's copy must be in its local tier and in the object store, or the
	// figure is not the one asked for.
	if !hasFileNamed(filepath.Join(hotRep.data, "blobs"), ch.PkgSHA256) {
		return fmt.Errorf("%s: after the warm-up the package %s is not in its local tier (%s/blobs)",
			hotRep.name, ch.PkgSHA256, hotRep.data)
	}
	if !hasFileNamed(filepath.Join(s3Root, s3Bucket), ch.PkgSHA256) {
		return fmt.Errorf("%s: after the warm-up the package %s is not in the object store (%s)",
			hotRep.name, ch.PkgSHA256, filepath.Join(s3Root, s3Bucket))
	}

	type target struct{ server, url string }
	targets := []target{
		{"nginx", "http://" + nginxAddr + "/" + ch.Pkg},
		{"single node", single.base + "/" + bench.ChannelName + "/" + ch.Pkg},
		{"replica A", hotRep.base + "/" + bench.ChannelName + "/" + ch.Pkg},
	}
	for _, t := range targets {
		body, err := get(client, t.url)
		if err != nil {
			return fmt.Errorf("%s: %w", t.server, err)
		}
		if got := bench.SHA256(body); got != ch.PkgSHA256 {
			return fmt.Errorf("%s sent %s with sha256 %s, want %s", t.server, t.url, got, ch.PkgSHA256)
		}
	}

	cpus := runtime.NumCPU()
	fmt.Printf("condaproxy replicas test, %s, %d CPUs, wrk -t%d -c%d -d%s per run, %d round(s)\n",
		time.Now().Format("2006-01-02 15:04"), cpus, *threads, *connections, *duration, *rounds)
	fmt.Printf("NOTE: wrk, nginx, Redis, the object store and every condaproxy share these %d CPUs;\n"+
		"absolute figures are low and noisy: compare the ratios, measured in this run.\n", cpus)
	fmt.Printf("load average before the runs: %s\n\n", bench.LoadAvg())

	// 1. The hot package.
	runs := map[string][]wrkResult{}
	var s3During, redisDuring []int64
	n := 0
	for round := 1; round <= *rounds; round++ {
		// Rotate the order, so no server always runs right after another.
		for k := range targets {
			t := targets[(k+round-1)%len(targets)]
			if n > 0 {
				if err := pause(ctx, time.Second); err != nil {
					return err
				}
			}
			n++
			fmt.Fprintf(os.Stderr, "load: round %d/%d: wrk 1 MiB package from %s (%s)\n", round, *rounds, t.server, *duration)
			s3Before := relay.total()
			redisBefore, rerr := redisCommands(redisAddr)
			res, err := runWrk(ctx, wrk, t.url)
			if err != nil {
				return fmt.Errorf("wrk %s: %w", t.url, err)
			}
			if t.server == "replica A" {
				s3During = append(s3During, relay.total()-s3Before)
				if redisAfter, rerr2 := redisCommands(redisAddr); rerr == nil && rerr2 == nil {
					redisDuring = append(redisDuring, redisAfter-redisBefore-1) // less our INFO
				}
			}
			runs[t.server] = append(runs[t.server], res)
		}
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(os.Stdout, "1. Hot 1 MiB package (same file; replica A: object store + Redis, local tier warm)")
	fmt.Fprintln(tw, "server\t   req/s\t   MiB/s\tavg latency\treq/s range\tsocket errors")
	med := map[string]wrkResult{}
	for _, t := range targets {
		r := median(runs[t.server])
		med[t.server] = r
		lo, hi := r.rps, r.rps
		for _, x := range runs[t.server] {
			lo, hi = min(lo, x.rps), max(hi, x.rps)
		}
		fmt.Fprintf(tw, "%s\t%8.0f\t%8.1f\t%11s\t%.0f-%.0f\t%s\n", t.server, r.rps,
			r.rps*float64(bench.PkgSize)/(1<<20), r.latency, lo, hi, r.errs)
	}
	tw.Flush()
	fmt.Printf("(median of %d round(s); ratios are of the medians)\n", *rounds)
	fmt.Printf("replica / single node  %.3fx\n", ratio(med["replica A"].rps, med["single node"].rps))
	fmt.Printf("replica / nginx        %.3fx\n", ratio(med["replica A"].rps, med["nginx"].rps))
	fmt.Printf("(reference: single node / nginx %.3fx)\n", ratio(med["single node"].rps, med["nginx"].rps))
	fmt.Printf("while wrk ran on replica A: object store requests %v, Redis commands %v (all replicas, per round)\n\n",
		s3During, redisDuring)

	// 2. Concurrent misses.
	targetsOf := map[string][]*server{
		"3 replicas":  reps,
		"1 replica":   reps[:1],
		"single node": {single},
	}
	next := 0 // the next unused package of the miss channel
	var trials []missResult
	var problems []string
	for round := 1; round <= *rounds; round++ {
		// Rotate the order, so no configuration always goes first.
		for k := range configs {
			cfg := configs[(k+round-1)%len(configs)]
			if err := pause(ctx, time.Second); err != nil {
				return err
			}
			files := mc.Pkgs[next : next+*missFiles]
			next += *missFiles
			fmt.Fprintf(os.Stderr, "load: round %d/%d: %d clients, %d cold files, %s\n",
				round, *rounds, *missClients, len(files), cfg)
			res, probs := missTrial(ctx, targetsOf[cfg], files, up, relay, redisAddr)
			res.round, res.config = round, cfg
			for _, p := range probs {
				problems = append(problems, fmt.Sprintf("round %d, %s: %s", round, cfg, p))
			}
			trials = append(trials, res)
			if err := ctx.Err(); err != nil {
				return err
			}
		}
	}
	// How many clients, and how many of the three replicas, ask for each file.
	perFileClients, perFileReplicas := map[int]bool{}, map[int]bool{}
	for f := 0; f < *missFiles; f++ {
		reps := map[int]bool{}
		c := 0
		for i := f; i < *missClients; i += *missFiles {
			reps[i%replicaN] = true
			c++
		}
		perFileClients[c], perFileReplicas[len(reps)] = true, true
	}
	fmt.Printf("2. Concurrent misses: %d clients released together ask for %d distinct cold 1 MiB files\n"+
		"   (client i: file i mod %d, so %s client(s) per file; in \"3 replicas\" client i asks replica i mod %d,\n"+
		"   so each file is asked of %s replica(s)); every trial has files no server has seen;\n"+
		"   the upstream is a Go file server on loopback\n",
		*missClients, *missFiles, *missFiles, keys(perFileClients), replicaN, keys(perFileReplicas))
	fmt.Fprintln(tw, "round\tconfiguration\twall time\tclient p50\tupstream GETs\tmax per file\tother upstream\tobject store PUT/GET/HEAD/other\tRedis commands\tper-file hand-off")
	for _, r := range trials {
		var h []string
		for _, t := range r.handoff {
			h = append(h, round3(t))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%d\t%d\t%d/%d/%d/%d\t%d\t%s\n", r.round, r.config, round3(r.wall), round3(r.p50),
			r.upstreamGETs, r.maxPerFile, r.otherUpstream, r.s3[0], r.s3[1], r.s3[2], r.s3[3], r.redis, strings.Join(h, " < "))
	}
	tw.Flush()
	fmt.Println("(per-file hand-off, \"3 replicas\" only: for each file, the time by which the first, second and\n" +
		"third replica had answered all of its clients for it; median over the trial's files)")
	fmt.Println()
	fmt.Fprintln(tw, "configuration\twall time (median)\twall range")
	medWall := map[string]time.Duration{}
	for _, cfg := range configs {
		var walls []time.Duration
		for _, r := range trials {
			if r.config == cfg {
				walls = append(walls, r.wall)
			}
		}
		slices.Sort(walls)
		medWall[cfg] = walls[(len(walls)-1)/2]
		fmt.Fprintf(tw, "%s\t%s\t%s-%s\n", cfg, round3(medWall[cfg]), round3(walls[0]), round3(walls[len(walls)-1]))
	}
	tw.Flush()
	fmt.Printf("(median of %d trial(s) each)\n", *rounds)
	fmt.Printf("3 replicas / 1 replica  wall time %.3fx\n", ratio(float64(medWall["3 replicas"]), float64(medWall["1 replica"])))
	fmt.Printf("(reference: 1 replica / single node %.3fx)\n", ratio(float64(medWall["1 replica"]), float64(medWall["single node"])))
	fmt.Printf("load average after the runs: %s (well above %d before or after: other work shared the\n"+
		"CPUs and the figures are not comparable between runs)\n", bench.LoadAvg(), cpus)

	// The servers must still be healthy and right after the load.
	for _, s := range []*server{single, hotRep} {
		if body, err := get(client, s.base+"/"+bench.ChannelName+"/"+ch.Pkg); err != nil || bench.SHA256(body) != ch.PkgSHA256 {
			problems = append(problems, fmt.Sprintf("%s after the load: package wrong or missing (err %v; log: %s)", s.name, err, s.Log))
		}
	}
	// Every miss package a replica filled is in the object store, whole.
	inStore := filesNamed(filepath.Join(s3Root, s3Bucket))
	for _, r := range trials {
		if r.config == "single node" {
			continue
		}
		for _, p := range r.files {
			if !inStore[p.SHA256] {
				problems = append(problems, fmt.Sprintf("round %d, %s: %s (%s) is not in the object store after its fill",
					r.round, r.config, p.Path, p.SHA256))
			}
		}
	}
	if len(problems) > 0 {
		fmt.Println("\nPROBLEMS (the figures above are not valid):")
		for _, p := range problems {
			fmt.Println("  " + p)
		}
		return fmt.Errorf("%d problem(s); logs in %s (run with -keep to keep them)", len(problems), tmp)
	}
	return nil
}

// serverConfig is the configuration of the single node (shared false: local disk,
// no Redis) or of a replica. Both channels: the hot one (file:// upstream, as the
// default mode) and the miss one (the counting upstream). metadata_ttl is long so
// no revalidation falls inside a timing.
func serverConfig(addr, data, hotDir, missURL string, shared bool, redisAddr, s3Endpoint string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# condaproxy replicas bench\nlisten: %q\ndata: %q\nlog:\n  level: info\n  format: json\n", addr, data)
	b.WriteString("cache:\n  metadata_ttl: 1h\n")
	if shared {
		fmt.Fprintf(&b, "redis: redis://%s/0\nstorage:\n  blobs: s3://%s/%s\n  s3:\n    endpoint: %q\n"+
			"    region: %s\n    access_key: %s\n    secret_key: %s\n    path_style: true\n",
			redisAddr, s3Bucket, s3Prefix, s3Endpoint, s3Region, s3Access, s3Secret)
	}
	fmt.Fprintf(&b, "channels:\n  - name: %s\n    upstreams:\n      - url: %q\n", bench.ChannelName, "file://"+filepath.ToSlash(hotDir))
	fmt.Fprintf(&b, "  - name: %s\n    upstreams:\n      - url: %q\n", bench.MissChannelName, missURL)
	return b.String()
}

type missResult struct {
	round         int
	config        string
	wall          time.Duration // release to the last byte of the last answer
	p50           time.Duration // median client latency
	upstreamGETs  int           // upstream requests for the trial's files
	maxPerFile    int           // the most upstream requests one of them got
	otherUpstream int           // upstream requests for anything else
	s3            [4]int64      // object store requests during the trial: PUT, GET, HEAD, other
	redis         int64         // Redis commands during the trial (all replicas), -1 unknown
	files         []bench.MissPkg
	// handoff, with several servers: for each file, when the first, second, ...
	// server had answered all its clients for it (the median over the files).
	handoff []time.Duration
}

// missTrial releases *missClients clients together; client i asks for files[i mod
// len(files)] of servers[i mod len(servers)]. Every answer must be a 200 with the
// right bytes, and the upstream must have been asked for every file exactly once.
func missTrial(ctx context.Context, servers []*server, files []bench.MissPkg, up *upstreamServer,
	relay *s3Relay, redisAddr string) (missResult, []string) {
	res := missResult{files: files, redis: -1}
	upBefore := up.snapshot()
	s3Before := relay.snapshot()
	redisBefore, rerr := redisCommands(redisAddr)

	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: *missClients}
	defer tr.CloseIdleConnections()
	client := &http.Client{Timeout: missTimeout, Transport: tr}
	type answer struct {
		at   time.Duration
		code int
		sha  string
		n    int64
		err  error
	}
	answers := make([]answer, *missClients)
	release := make(chan struct{})
	var start time.Time
	var ready, done sync.WaitGroup
	for i := range answers {
		ready.Add(1)
		done.Add(1)
		go func(i int) {
			defer done.Done()
			s, p := servers[i%len(servers)], files[i%len(files)]
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/"+bench.MissChannelName+"/"+p.Path, nil)
			ready.Done()
			if err != nil {
				answers[i].err = err
				return
			}
			<-release // start is set before release closes
			resp, err := client.Do(req)
			if err != nil {
				answers[i] = answer{at: time.Since(start), err: err}
				return
			}
			h := sha256.New()
			n, err := io.Copy(h, resp.Body)
			resp.Body.Close()
			answers[i] = answer{at: time.Since(start), code: resp.StatusCode, sha: hex.EncodeToString(h.Sum(nil)), n: n, err: err}
		}(i)
	}
	ready.Wait()
	start = time.Now()
	close(release)
	done.Wait()

	var problems []string
	var ats []time.Duration
	for i, a := range answers {
		s, p := servers[i%len(servers)], files[i%len(files)]
		ats = append(ats, a.at)
		res.wall = max(res.wall, a.at)
		switch {
		case a.err != nil:
			problems = append(problems, fmt.Sprintf("client %d, %s %s: %v", i, s.name, p.Path, a.err))
		case a.code != http.StatusOK:
			problems = append(problems, fmt.Sprintf("client %d, %s %s: HTTP %d", i, s.name, p.Path, a.code))
		case a.sha != p.SHA256 || a.n != p.Size:
			problems = append(problems, fmt.Sprintf("client %d, %s %s: %d bytes with sha256 %s, want %d bytes %s",
				i, s.name, p.Path, a.n, a.sha, p.Size, p.SHA256))
		}
	}
	slices.Sort(ats)
	res.p50 = ats[(len(ats)-1)/2]
	if len(servers) > 1 {
		// done[f][s]: when server s had answered the last of its clients for file f.
		done := make([]map[int]time.Duration, len(files))
		for i, a := range answers {
			f, s := i%len(files), i%len(servers)
			if done[f] == nil {
				done[f] = map[int]time.Duration{}
			}
			done[f][s] = max(done[f][s], a.at)
		}
		var byRank [][]time.Duration
		for _, m := range done {
			var ts []time.Duration
			for _, t := range m {
				ts = append(ts, t)
			}
			slices.Sort(ts)
			for k, t := range ts {
				if k == len(byRank) {
					byRank = append(byRank, nil)
				}
				byRank[k] = append(byRank[k], t)
			}
		}
		for _, ts := range byRank {
			slices.Sort(ts)
			res.handoff = append(res.handoff, ts[(len(ts)-1)/2])
		}
	}

	upAfter := up.snapshot()
	want := map[string]bool{}
	for _, p := range files {
		want["/"+p.Path] = true
		got := upAfter["/"+p.Path] - upBefore["/"+p.Path]
		res.upstreamGETs += got
		res.maxPerFile = max(res.maxPerFile, got)
		if got != 1 {
			problems = append(problems, fmt.Sprintf("upstream was asked %d times for %s (want exactly 1)", got, p.Path))
		}
	}
	for path, n := range upAfter {
		if d := n - upBefore[path]; d > 0 && !want[path] {
			res.otherUpstream += d
			problems = append(problems, fmt.Sprintf("upstream was asked %d times for %s, not part of the trial", d, path))
		}
	}
	// Uploads and lease releases may trail the last answer a little.
	time.Sleep(500 * time.Millisecond)
	s3After := relay.snapshot()
	for i := range res.s3 {
		res.s3[i] = s3After[i] - s3Before[i]
	}
	if redisAfter, rerr2 := redisCommands(redisAddr); rerr == nil && rerr2 == nil {
		res.redis = redisAfter - redisBefore - 1 // less our INFO
	}
	return res, problems
}

// keys is "a" or "a-b": the smallest and largest key of m.
func keys(m map[int]bool) string {
	lo, hi := -1, -1
	for k := range m {
		if lo < 0 || k < lo {
			lo = k
		}
		hi = max(hi, k)
	}
	if lo == hi {
		return strconv.Itoa(lo)
	}
	return fmt.Sprintf("%d-%d", lo, hi)
}

func pause(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func round3(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}

// findVersitygw looks in PATH, then in $(go env GOPATH)/bin.
func findVersitygw(ctx context.Context) (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	out, err := exec.CommandContext(ctx, "go", "env", "GOPATH").Output()
	if err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(out))) {
			p := filepath.Join(dir, "bin", "versitygw")
			if info, err := os.Stat(p); err == nil && !info.IsDir() {
				return p, nil
			}
		}
	}
	return "", errors.New("versitygw not found (PATH, $(go env GOPATH)/bin): " +
		"go install github.com/versity/versitygw/cmd/versitygw@v1.8.0")
}

// waitDial waits until addr accepts a TCP connection, the process exits, or 30 s pass.
func waitDial(ctx context.Context, addr string, p *bench.Proc) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("exited before listening (%v)", p.Cmd.ProcessState)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not listening on %s after 30 s: %v", addr, err)
		}
		if err := pause(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// s3Relay passes the replicas' object store requests to versitygw unchanged (the
// Host header kept, so the signatures hold) and counts them by method.
type s3Relay struct {
	srv    *http.Server
	counts [4]atomic.Int64 // PUT, GET, HEAD, other
}

func startS3Relay(target string) (*s3Relay, string, error) {
	u, err := url.Parse("http://" + target)
	if err != nil {
		return nil, "", err
	}
	r := &s3Relay{}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host
		},
		Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	r.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch req.Method {
		case http.MethodPut:
			r.counts[0].Add(1)
		case http.MethodGet:
			r.counts[1].Add(1)
		case http.MethodHead:
			r.counts[2].Add(1)
		default:
			r.counts[3].Add(1)
		}
		rp.ServeHTTP(w, req)
	})}
	go r.srv.Serve(ln)
	return r, ln.Addr().String(), nil
}

func (r *s3Relay) snapshot() (s [4]int64) {
	for i := range s {
		s[i] = r.counts[i].Load()
	}
	return s
}

func (r *s3Relay) total() (n int64) {
	for _, c := range r.snapshot() {
		n += c
	}
	return n
}

func (r *s3Relay) close() { r.srv.Close() }

// upstreamServer is the miss channel's upstream: a Go file server that counts the
// requests for every path.
type upstreamServer struct {
	srv    *http.Server
	mu     sync.Mutex
	counts map[string]int
}

func startUpstream(dir string) (*upstreamServer, string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", err
	}
	u := &upstreamServer{counts: map[string]int{}}
	files := http.FileServer(http.Dir(dir))
	u.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.counts[r.URL.Path]++
		u.mu.Unlock()
		files.ServeHTTP(w, r)
	})}
	go u.srv.Serve(ln)
	return u, ln.Addr().String(), nil
}

func (u *upstreamServer) snapshot() map[string]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	m := make(map[string]int, len(u.counts))
	for k, v := range u.counts {
		m[k] = v
	}
	return m
}

func (u *upstreamServer) close() { u.srv.Close() }

// redisCommands is Redis's total_commands_processed (INFO stats).
func redisCommands(addr string) (int64, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "INFO stats\r\n"); err != nil {
		return 0, err
	}
	br := bufio.NewReader(c)
	head, err := br.ReadString('\n')
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
	if err != nil || !strings.HasPrefix(head, "$") || n < 0 || n > 1<<20 {
		return 0, fmt.Errorf("redis INFO: unexpected answer %q", head)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "total_commands_processed:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("redis INFO: no total_commands_processed")
}

// filesNamed is the set of names of the regular files under root.
func filesNamed(root string) map[string]bool {
	names := map[string]bool{}
	filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			names[d.Name()] = true
		}
		return nil
	})
	return names
}

func hasFileNamed(root, name string) bool { return filesNamed(root)[name] }
