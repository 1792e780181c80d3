// Command filterload measures the filter on a conda-forge-sized repodata: it builds
// a repodata.json of the size asked (default 300 MB, the size of conda-forge
// linux-64) by repeating the real records of ../shared/testdata/cf-subchannel-py39
// under new filenames, serves it to a real condaproxy process through a file://
// upstream, asks that process for the filtered repodata.json once, and reports the
// time to the answer (MB/s of upstream JSON) and the process's peak RSS (VmHWM)
// against the document's size.
//
// Then (-shards, on by default) the sharded repodata of a document of the same
// size whose copies are packages of their own (shards.go here): what a client
// downloads to solve against the flat repodata.json.zst, and the time and peak
// memory of a cold build and of a rebuild after 1% of the names changed.
//
//	go run ./bench/filterload [-size 300] [-keep]
//
// It needs nothing but Go; every server binds 127.0.0.1.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/condaproxy/condaproxy/bench"
)

var (
	shardsToo  bool
	profileDir string
	only       string
)

func main() {
	sizeMB := flag.Int("size", 300, "size of the generated repodata.json, in MB")
	flag.BoolVar(&shardsToo, "shards", true, "also measure sharded repodata (CEP-16) on a channel of as many names")
	keep := flag.Bool("keep", false, "keep the temp directory")
	flag.StringVar(&profileDir, "profile", "", "write a CPU profile of each proxy run into this directory (CONDAPROXY_CPUPROFILE)")
	flag.StringVar(&only, "only", "", "run only the filter case whose name contains this")
	testdata := flag.String("testdata", "../shared/testdata", "the shared testdata directory")
	flag.Parse()
	if err := run(*sizeMB, *keep, *testdata); err != nil {
		fmt.Fprintln(os.Stderr, "filterload:", err)
		os.Exit(1)
	}
}

func run(sizeMB int, keep bool, testdata string) error {
	tmp, cleanup, err := bench.TempDir("filterload-", keep)
	if err != nil {
		return err
	}
	defer cleanup()
	channel := filepath.Join(tmp, "channel")
	src := filepath.Join(testdata, "cf-subchannel-py39", "linux-64", "repodata.json")
	size, records, err := bench.ScaleRepodata(src, filepath.Join(channel, "linux-64", "repodata.json"), int64(sizeMB)<<20, bench.ScaleOptions{})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(channel, "noarch"), 0o755); err != nil {
		return err
	}
	os.WriteFile(filepath.Join(channel, "noarch", "repodata.json"), []byte(`{"info":{"subdir":"noarch"},"packages":{}}`), 0o644)
	fmt.Printf("repodata.json: %.1f MB, %d records (the %s records, repeated)\n", float64(size)/1e6, records, src)
	// The baseline the issue sets: CPython's json.load + json.dump of the same
	// file, in this run, on this machine.
	pyMBs, err := cpythonRoundTrip(filepath.Join(channel, "linux-64", "repodata.json"), size)
	if err != nil {
		fmt.Println("CPython baseline: skipped:", err)
	} else {
		fmt.Printf("CPython json.load + json.dump: %.1f MB/s\n", pyMBs)
	}

	bin := filepath.Join(tmp, "condaproxy")
	if err := bench.BuildHere(bin); err != nil {
		return err
	}
	for _, c := range []struct{ name, filter string }{
		{"no filter", ""},
		{"SPEC filter", `    platforms: [linux-64]
    python_versions: ["3.9"]
    license_blacklist: [GPL]
    blacklist: ["openssl <1.1", "r-*"]
    whitelist: ["libgcc-ng"]
    exclude_newer: 2024-01-01
`},
		{"pkg_list + include_dependencies", `    platforms: [linux-64]
    pkg_list: ["python 3.9.*", "numpy"]
    include_dependencies: true
`},
	} {
		if only != "" && !strings.Contains(c.name, only) {
			continue
		}
		mbs, err := measure(c.name, c.filter, bin, tmp, channel, size)
		if err != nil {
			return err
		}
		if pyMBs > 0 {
			fmt.Printf("%-32s %.2fx CPython's round trip   target >= 8x\n", "", mbs/pyMBs)
		}
	}
	if shardsToo {
		return measureShards(bin, tmp, src, int64(sizeMB)<<20)
	}
	return nil
}

func measure(name, filter, bin, tmp, channel string, size int64) (float64, error) {
	port, err := bench.FreePort()
	if err != nil {
		return 0, err
	}
	data, err := os.MkdirTemp(tmp, "data-")
	if err != nil {
		return 0, err
	}
	cfg := fmt.Sprintf("listen: 127.0.0.1:%d\ndata: %s\nlog: {level: warn}\nchannels:\n  - name: big\n    upstreams: [{url: \"file://%s\"}]\n%s",
		port, data, channel, filter)
	cfgPath := filepath.Join(tmp, "condaproxy.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return 0, err
	}
	var env []string
	if profileDir != "" {
		p, _ := filepath.Abs(filepath.Join(profileDir, strings.ReplaceAll(name, " ", "_")+".pprof"))
		env = append(env, "CONDAPROXY_CPUPROFILE="+p)
	}
	stop, pid, err := bench.ServeProxy(bin, cfgPath, port, os.Stderr, env, 200)
	if err != nil {
		return 0, err
	}
	defer stop()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	baseRSS := bench.ProcStatus(pid, "VmHWM:")
	// VmHWM says how high, not what: sampled during the build, the anonymous
	// part (the Go heap) and the file-backed part (mapped documents, the
	// binary) say where the peak comes from.
	sampling := make(chan struct{})
	sampled := make(chan [2]int64, 1)
	go func() {
		var peak [2]int64
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			anon, file := bench.RSSParts(pid)
			peak[0], peak[1] = max(peak[0], anon), max(peak[1], file)
			select {
			case <-sampling:
				sampled <- peak
				return
			case <-t.C:
			}
		}
	}()
	start := time.Now()
	req, _ := http.NewRequest("GET", base+"/big/linux-64/repodata.json", nil)
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	served, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("%s: repodata.json answered %d", name, resp.StatusCode)
	}
	peak := bench.ProcStatus(pid, "VmHWM:")
	close(sampling)
	parts := <-sampled
	mbs := float64(size) / 1e6 / took.Seconds()
	fmt.Printf("%-32s %6.1f MB in %6.2fs = %6.1f MB/s   served %6.1f MB   peak RSS %6.1f MB = %.2fx the document (%.1f MB before: +%.2fx)\n",
		name, float64(size)/1e6, took.Seconds(), mbs, float64(served)/1e6,
		float64(peak)/1e6, float64(peak)/float64(size), float64(baseRSS)/1e6, float64(peak-baseRSS)/float64(size))
	fmt.Printf("%-32s sampled peaks: anonymous (heap) %.1f MB = %.2fx, file-backed (maps, binary) %.1f MB = %.2fx\n", "",
		float64(parts[0])/1e6, float64(parts[0])/float64(size), float64(parts[1])/1e6, float64(parts[1])/float64(size))
	return mbs, nil
}

// cpythonRoundTrip times `json.load` then `json.dump` of path in CPython (the
// python3 on PATH), the yardstick of the issue, and returns its MB/s.
func cpythonRoundTrip(path string, size int64) (float64, error) {
	script := `import json, os, sys, time
t = time.perf_counter()
with open(sys.argv[1], "rb") as f:
    d = json.load(f)
with open(os.devnull, "w") as out:
    json.dump(d, out)
print(time.perf_counter() - t)
`
	out, err := exec.Command("python3", "-c", script, path).Output()
	if err != nil {
		return 0, fmt.Errorf("python3: %w", err)
	}
	secs, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil || secs <= 0 {
		return 0, fmt.Errorf("python3 printed %q", out)
	}
	return float64(size) / 1e6 / secs, nil
}
