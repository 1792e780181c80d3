// Command filterload measures the filter on a conda-forge-sized repodata: it builds
// a repodata.json of the size asked (default 300 MB, the size of conda-forge
// linux-64) by repeating the real records of ../shared/testdata/cf-subchannel-py39
// under new filenames, serves it to a real condaproxy process through a file://
// upstream, asks that process for the filtered repodata.json once, and reports the
// time to the answer (MB/s of upstream JSON) and the process's peak RSS (VmHWM)
// against the document's size.
//
//	go run ./bench/filterload [-size 300] [-keep]
//
// It needs nothing but Go; every server binds 127.0.0.1.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	sizeMB := flag.Int("size", 300, "size of the generated repodata.json, in MB")
	keep := flag.Bool("keep", false, "keep the temp directory")
	testdata := flag.String("testdata", "../shared/testdata", "the shared testdata directory")
	flag.Parse()
	if err := run(*sizeMB, *keep, *testdata); err != nil {
		fmt.Fprintln(os.Stderr, "filterload:", err)
		os.Exit(1)
	}
}

func run(sizeMB int, keep bool, testdata string) error {
	tmp, err := os.MkdirTemp("", "filterload-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(tmp)
	} else {
		fmt.Println("temp dir:", tmp)
	}
	channel := filepath.Join(tmp, "channel")
	src := filepath.Join(testdata, "cf-subchannel-py39", "linux-64", "repodata.json")
	size, records, err := scale(src, filepath.Join(channel, "linux-64", "repodata.json"), int64(sizeMB)<<20)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(channel, "noarch"), 0o755); err != nil {
		return err
	}
	os.WriteFile(filepath.Join(channel, "noarch", "repodata.json"), []byte(`{"info":{"subdir":"noarch"},"packages":{}}`), 0o644)
	fmt.Printf("repodata.json: %.1f MB, %d records (the %s records, repeated)\n", float64(size)/1e6, records, src)

	bin := filepath.Join(tmp, "condaproxy")
	build := exec.Command("go", "build", "-o", bin, "./cmd/condaproxy")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("go build (run from the repository root): %w", err)
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
		if err := measure(c.name, c.filter, bin, tmp, channel, size); err != nil {
			return err
		}
	}
	return nil
}

// scale writes a repodata.json of about target bytes made of src's records,
// repeated with a copy number in each filename.
func scale(src, dst string, target int64) (int64, int, error) {
	data, err := os.ReadFile(src)
	if err != nil {
		return 0, 0, err
	}
	var doc struct {
		Packages      map[string]json.RawMessage `json:"packages"`
		PackagesConda map[string]json.RawMessage `json:"packages.conda"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return 0, 0, err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return 0, 0, err
	}
	f, err := os.Create(dst)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	cw := &counter{w: w}
	records := 0
	fmt.Fprint(cw, `{"info":{"subdir":"linux-64"},`+"\n")
	ext := regexp.MustCompile(`(\.tar\.bz2|\.conda)$`)
	for _, section := range []struct {
		name  string
		recs  map[string]json.RawMessage
		limit int64 // half the target in each section, as in conda-forge today
	}{{"packages", doc.Packages, target / 2}, {"packages.conda", doc.PackagesConda, target}} {
		type rec struct {
			stem, ext string
			raw       []byte
		}
		var recs []rec
		for fn, raw := range section.recs {
			var compact bytes.Buffer
			json.Compact(&compact, raw)
			m := ext.FindStringIndex(fn)
			recs = append(recs, rec{fn[:m[0]], fn[m[0]:], compact.Bytes()})
		}
		fmt.Fprintf(cw, "%q:{", section.name)
		first := true
		for copyN := 0; len(recs) > 0 && cw.n < section.limit; copyN++ {
			for _, r := range recs {
				if !first {
					cw.Write([]byte(",\n"))
				}
				first = false
				fmt.Fprintf(cw, "%q:", r.stem+"_c"+strconv.Itoa(copyN)+r.ext)
				cw.Write(r.raw)
				records++
			}
		}
		fmt.Fprint(cw, "},\n")
	}
	fmt.Fprint(cw, `"removed":[],"repodata_version":1}`+"\n")
	if err := w.Flush(); err != nil {
		return 0, 0, err
	}
	return cw.n, records, nil
}

type counter struct {
	w io.Writer
	n int64
}

func (c *counter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func measure(name, filter, bin, tmp, channel string, size int64) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	data, err := os.MkdirTemp(tmp, "data-")
	if err != nil {
		return err
	}
	cfg := fmt.Sprintf("listen: 127.0.0.1:%d\ndata: %s\nlog: {level: warn}\nchannels:\n  - name: big\n    upstreams: [{url: \"file://%s\"}]\n%s",
		port, data, channel, filter)
	cfgPath := filepath.Join(tmp, "condaproxy.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	cmd := exec.Command(bin, "serve", "-c", cfgPath)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for i := 0; ; i++ {
		if r, err := http.Get(base + "/healthz"); err == nil {
			r.Body.Close()
			break
		}
		if i > 200 {
			return fmt.Errorf("condaproxy did not start")
		}
		time.Sleep(25 * time.Millisecond)
	}
	baseRSS := vmHWM(cmd.Process.Pid)
	start := time.Now()
	req, _ := http.NewRequest("GET", base+"/big/linux-64/repodata.json", nil)
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	served, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: repodata.json answered %d", name, resp.StatusCode)
	}
	peak := vmHWM(cmd.Process.Pid)
	fmt.Printf("%-32s %6.1f MB in %6.2fs = %6.1f MB/s   served %6.1f MB   peak RSS %6.1f MB = %.2fx the document (%.1f MB before)\n",
		name, float64(size)/1e6, took.Seconds(), float64(size)/1e6/took.Seconds(), float64(served)/1e6,
		float64(peak)/1e6, float64(peak)/float64(size), float64(baseRSS)/1e6)
	return nil
}

// vmHWM is the peak resident set of pid, in bytes, from /proc.
func vmHWM(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
