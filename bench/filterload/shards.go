package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/condaproxy/condaproxy/bench"
	"github.com/condaproxy/condaproxy/shards"
)

// solveSpecs are the names whose dependency closure a client fetches shards
// for: python and what the subset of conda-forge in the testdata has beside it
// (it has no numpy).
var solveSpecs = []string{"python", "certifi", "openssl"}

func measureShards(bin, tmp, src string, target int64) error {
	channel := filepath.Join(tmp, "named")
	doc := filepath.Join(channel, "linux-64", "repodata.json")
	size, records, err := bench.ScaleRepodata(src, doc, target, bench.ScaleOptions{RenameCopies: true})
	if err != nil {
		return err
	}
	os.MkdirAll(filepath.Join(channel, "noarch"), 0o755)
	os.WriteFile(filepath.Join(channel, "noarch", "repodata.json"), []byte(`{"info":{"subdir":"noarch"},"packages":{}}`), 0o644)
	fmt.Printf("\nsharded repodata: %.1f MB, %d records, copies renamed (a package name per copy)\n", float64(size)/1e6, records)

	port, err := bench.FreePort()
	if err != nil {
		return err
	}
	data, err := os.MkdirTemp(tmp, "data-")
	if err != nil {
		return err
	}
	logPath := filepath.Join(tmp, "shards.log")
	cfg := fmt.Sprintf("listen: 127.0.0.1:%d\ndata: %s\nlog: {level: info}\ncache: {metadata_ttl: 2s}\nchannels:\n  - name: big\n    upstreams: [{url: \"file://%s\"}]\n",
		port, data, channel)
	cfgPath := filepath.Join(tmp, "shards.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	stop, pid, err := bench.ServeProxy(bin, cfgPath, port, logf, nil, 200)
	if err != nil {
		return err
	}
	defer stop()
	base := fmt.Sprintf("http://127.0.0.1:%d/big/linux-64/", port)
	// The flat answer first: the cut a client without shards reads, and what
	// the shards are made from.
	zst, _, err := fetch(base + "repodata.json.zst")
	if err != nil {
		return err
	}

	before := bench.ProcStatus(pid, "RssAnon:")
	sample := sampleAnon(pid)
	start := time.Now()
	index, _, err := fetch(base + "repodata_shards.msgpack.zst")
	if err != nil {
		return err
	}
	cold := time.Since(start)
	peak := sample()
	ix, err := shards.DecodeIndex(index)
	if err != nil {
		return err
	}
	fmt.Printf("cold build of every shard: %d names in %.2fs; peak anonymous memory (heap, not the mapped document) %.1f MB, %.1f MB before it: +%.2fx the document\n",
		len(ix.Shards), cold.Seconds(), float64(peak)/1e6, float64(before)/1e6, float64(peak-before)/float64(size))

	// A client's solve: the index, then the shards of the closure of solveSpecs.
	got, n, err := closureBytes(base, ix, solveSpecs)
	if err != nil {
		return err
	}
	fmt.Printf("solve %v: index %.1f KB + %d shards %.1f KB = %.1f KB, against repodata.json.zst %.1f MB: %.0fx fewer bytes\n",
		solveSpecs, float64(len(index))/1e3, n, float64(got)/1e3, float64(len(index)+int(got))/1e3,
		float64(len(zst))/1e6, float64(len(zst))/float64(len(index)+int(got)))

	// 1% of the names change upstream: one copy in a hundred gets another member.
	if _, _, err := bench.ScaleRepodata(src, doc, target, bench.ScaleOptions{RenameCopies: true,
		Touch: func(c int) bool { return c%100 == 1 }}); err != nil {
		return err
	}
	later := time.Now().Add(time.Hour)
	os.Chtimes(doc, later, later)
	time.Sleep(2100 * time.Millisecond) // past metadata_ttl
	logBefore, _ := os.ReadFile(logPath)
	before = bench.ProcStatus(pid, "RssAnon:")
	sample = sampleAnon(pid)
	start = time.Now()
	if _, _, err := fetch(base + "repodata.json"); err != nil { // stale: revalidated behind
		return err
	}
	old := sumOf(index)
	for {
		b, _, err := fetch(base + "repodata_shards.msgpack.zst")
		if err != nil {
			return err
		}
		if sumOf(b) != old {
			break
		}
		if time.Since(start) > 10*time.Minute {
			return fmt.Errorf("the index did not change after the upstream did")
		}
		time.Sleep(50 * time.Millisecond)
	}
	rebuild := time.Since(start)
	peak = sample()
	logAll, _ := os.ReadFile(logPath)
	encoded := regexp.MustCompile(`sharded repodata built.*?encoded["=:]+(\d+)`).FindSubmatch(logAll[len(logBefore):])
	enc := "?"
	if encoded != nil {
		enc = string(encoded[1])
	}
	fmt.Printf("after 1%% of the names changed: revalidation + cut + shards in %.2fs (cold shards alone: %.2fs), %s names encoded again; peak anonymous memory %.1f MB, +%.2fx the document (the repodata cut's share is issue 12's)\n",
		rebuild.Seconds(), cold.Seconds(), enc, float64(peak)/1e6, float64(peak-before)/float64(size))
	return nil
}

// closureBytes fetches, as a client does, the shard of each name in specs and
// of every name their records depend on; it returns the bytes and the count.
func closureBytes(base string, ix *shards.Index, specs []string) (int64, int, error) {
	seen := map[string]bool{}
	todo := append([]string(nil), specs...)
	var total int64
	n := 0
	for len(todo) > 0 {
		name := todo[0]
		todo = todo[1:]
		if seen[name] {
			continue
		}
		seen[name] = true
		sum, ok := ix.Shards[name]
		if !ok {
			continue // a virtual package, or one the channel lacks
		}
		b, _, err := fetch(base + "shards/" + hex.EncodeToString(sum) + ".msgpack.zst")
		if err != nil {
			return 0, 0, err
		}
		total += int64(len(b))
		n++
		sh, err := shards.DecodeShard(b)
		if err != nil {
			return 0, 0, err
		}
		for _, recs := range []map[string]map[string]any{sh.Packages, sh.PackagesConda} {
			for _, r := range recs {
				deps, _ := r["depends"].([]any)
				for _, d := range deps {
					if s, ok := d.(string); ok {
						todo = append(todo, strings.Fields(s)[0])
					}
				}
			}
		}
	}
	return total, n, nil
}

func fetch(url string) ([]byte, http.Header, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("%s: %d %s", url, resp.StatusCode, bytes.TrimSpace(b))
	}
	return b, resp.Header, err
}

func sumOf(b []byte) [32]byte { return sha256.Sum256(b) }

// sampleAnon follows pid's anonymous resident memory (its heap and stacks; not
// the file pages of a mapped document, which the kernel can drop) every 5 ms
// until the returned function is called, which returns the peak.
func sampleAnon(pid int) func() int64 {
	stop := make(chan struct{})
	done := make(chan int64)
	go func() {
		var peak int64
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			peak = max(peak, bench.ProcStatus(pid, "RssAnon:"))
			select {
			case <-stop:
				done <- peak
				return
			case <-t.C:
			}
		}
	}()
	return func() int64 { close(stop); return <-done }
}
