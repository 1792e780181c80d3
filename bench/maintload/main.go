//go:build unix

// Command maintload measures export and import through a running server
// against the same commands on a stopped server's data directory, on this
// machine, in one run:
//
//	go run ./bench/maintload [-packages 300] [-rounds 3] [-keep]
//
// It builds a miss channel (bench.BuildMissChannel: -packages distinct 1 MiB
// packages), syncs it from a file:// upstream into a data directory, then, each
// round:
//
//   - export, local: `condaproxy export -o local.tar` with no server on the data
//     directory (the command opens the store itself);
//   - export, through the server: the same command with `condaproxy serve`
//     running on that directory (the command finds it and streams the tar from
//     it, checking every entry against the manifest before the rename);
//   - import, local: `condaproxy import local.tar` into a fresh data directory;
//   - import, through the server: the same into a fresh data directory a server
//     runs on (the tar is uploaded; the server verifies and commits it).
//
// Each command is timed from start to exit; the ratio is local time over
// through-server time (1.0: as fast). The two tars are checked to list the same
// packages with the same sha256, and each import's exit status is checked.
package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/condaproxy/condaproxy/bench"
	"github.com/condaproxy/condaproxy/mirror"
)

func main() {
	packages := flag.Int("packages", 300, "1 MiB packages in the channel")
	rounds := flag.Int("rounds", 3, "rounds of the four measurements")
	keep := flag.Bool("keep", false, "keep the temp dir")
	flag.Parse()
	log.SetFlags(0)
	if err := run(*packages, *rounds, *keep); err != nil {
		log.Fatal("maintload: ", err)
	}
}

func run(packages, rounds int, keep bool) error {
	ctx := context.Background()
	dir, cleanup, err := bench.TempDir("maintload-", keep)
	if err != nil {
		return err
	}
	defer cleanup()
	bin := filepath.Join(dir, "condaproxy")
	if err := bench.BuildProxy(ctx, bin, "", "maintload: building ./cmd/condaproxy"); err != nil {
		return err
	}
	ch, err := bench.BuildMissChannel(filepath.Join(dir, "upstream"), packages)
	if err != nil {
		return err
	}
	src := filepath.Join(dir, "src")
	cfg := func(data string) (string, error) {
		p := data + ".yaml"
		y := fmt.Sprintf("data: %s\ncache:\n  max_size: 100GiB\nchannels:\n  - name: %s\n    platforms: [linux-64]\n    upstreams:\n      - url: file://%s\n",
			data, bench.MissChannelName, ch.Dir)
		return p, os.WriteFile(p, []byte(y), 0o644)
	}
	srcCfg, err := cfg(src)
	if err != nil {
		return err
	}
	if out, err := exec.Command(bin, "sync", "-c", srcCfg).CombinedOutput(); err != nil {
		return fmt.Errorf("sync: %v\n%s", err, out)
	}
	fmt.Printf("maintload: %d packages of 1 MiB, %d rounds, load %s\n", packages, rounds, bench.LoadAvg())
	var exLocal, exRemote, imLocal, imRemote []time.Duration
	for r := 0; r < rounds; r++ {
		localTar := filepath.Join(dir, fmt.Sprintf("local%d.tar", r))
		remoteTar := filepath.Join(dir, fmt.Sprintf("remote%d.tar", r))
		d, err := timed(bin, "export", "-c", srcCfg, "-o", localTar)
		if err != nil {
			return err
		}
		exLocal = append(exLocal, d)
		stop, err := serve(ctx, bin, srcCfg, filepath.Join(dir, fmt.Sprintf("serve-src%d.log", r)))
		if err != nil {
			return err
		}
		d, err = timed(bin, "export", "-c", srcCfg, "-o", remoteTar)
		stop()
		if err != nil {
			return err
		}
		exRemote = append(exRemote, d)
		a, err := tarPackages(localTar)
		if err != nil {
			return err
		}
		b, err := tarPackages(remoteTar)
		if err != nil {
			return err
		}
		if len(a) != packages || !slices.Equal(a, b) {
			return fmt.Errorf("the local export lists %d packages, the server's %d, or they differ", len(a), len(b))
		}
		dl := filepath.Join(dir, fmt.Sprintf("imlocal%d", r))
		dlCfg, err := cfg(dl)
		if err != nil {
			return err
		}
		if d, err = timed(bin, "import", "-c", dlCfg, localTar); err != nil {
			return err
		}
		imLocal = append(imLocal, d)
		dr := filepath.Join(dir, fmt.Sprintf("imremote%d", r))
		drCfg, err := cfg(dr)
		if err != nil {
			return err
		}
		stop, err = serve(ctx, bin, drCfg, filepath.Join(dir, fmt.Sprintf("serve-im%d.log", r)))
		if err != nil {
			return err
		}
		d, err = timed(bin, "import", "-c", drCfg, localTar)
		stop()
		if err != nil {
			return err
		}
		imRemote = append(imRemote, d)
		for _, p := range []string{localTar, remoteTar, dl, dr} {
			os.RemoveAll(p)
		}
		exec.Command("sync").Run()
	}
	mb := float64(packages)
	line := func(what string, local, remote []time.Duration) {
		l, rm := median(local), median(remote)
		fmt.Printf("%-7s local %7.1f MB/s  through the server %7.1f MB/s  ratio %.2fx  (medians of %d: %v, %v)\n",
			what, mb/l.Seconds(), mb/rm.Seconds(), l.Seconds()/rm.Seconds(), len(local), l.Round(time.Millisecond), rm.Round(time.Millisecond))
	}
	line("export", exLocal, exRemote)
	line("import", imLocal, imRemote)
	return nil
}

// timed runs bin with args and returns how long it took; a failure is an error
// with its output.
func timed(bin string, args ...string) (time.Duration, error) {
	start := time.Now()
	out, err := exec.Command(bin, args...).CombinedOutput()
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return d, nil
}

// serve starts `condaproxy serve -c cfg` on a free port and waits until it
// answers; stop ends it.
func serve(ctx context.Context, bin, cfg, logPath string) (stop func(), err error) {
	addr, err := bench.FreeAddr()
	if err != nil {
		return nil, err
	}
	p, err := bench.StartProc("maintload", "serve", logPath, exec.Command(bin, "serve", "-c", cfg, "--listen", addr))
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := bench.WaitHTTP(wctx, &http.Client{Timeout: 2 * time.Second}, "http://"+addr+"/healthz", p); err != nil {
		p.Stop()
		return nil, err
	}
	return p.Stop, nil
}

// tarPackages lists "path sha256" of every package in the tar's manifest.
func tarPackages(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("%s: no manifest: %v", path, err)
		}
		if h.Name != mirror.ManifestName {
			continue
		}
		var m mirror.Manifest
		if err := json.NewDecoder(io.LimitReader(tr, 64<<20)).Decode(&m); err != nil {
			return nil, err
		}
		var out []string
		for _, f := range m.Files {
			if strings.HasSuffix(f.Path, ".conda") || strings.HasSuffix(f.Path, ".tar.bz2") {
				out = append(out, f.Path+" "+f.SHA256)
			}
		}
		sort.Strings(out)
		return out, nil
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
