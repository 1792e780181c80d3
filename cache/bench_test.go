package cache

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// benchSizes are the table sizes the benchmarks run at: 10,000 blobs unless
// CONDAPROXY_BENCH_BLOBS lists others ("100000,1000000").
func benchSizes(b *testing.B) []int {
	env := os.Getenv("CONDAPROXY_BENCH_BLOBS")
	if env == "" {
		return []int{10_000}
	}
	var out []int
	for _, f := range strings.Split(env, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			b.Fatalf("CONDAPROXY_BENCH_BLOBS: %q", f)
		}
		out = append(out, n)
	}
	return out
}

// benchSHA is a made-up sha256 for blob i of a benchmark's table.
func benchSHA(i int) string {
	var raw [32]byte
	raw[0], raw[1], raw[2], raw[3] = byte(i*0x9e), byte(i>>24), byte(i>>16), byte(i>>8)
	raw[4] = byte(i)
	return hex.EncodeToString(raw[:])
}

// BenchmarkCommitFull: one commit into a cache that is full, each evicting the
// least recently used blob. The table is filled in memory (no files: the
// deleter's removals find none), so a million entries take seconds to set up;
// the commits are real ones (a file fsynced and renamed, a synced record).
// Before the LRU list, the eviction sorted the whole table per commit: 53 ms
// at 100,000 blobs, 830 ms at 1,000,000, on the machine of the first numbers.
func BenchmarkCommitFull(b *testing.B) {
	const size = 100
	for _, n := range benchSizes(b) {
		b.Run(fmt.Sprintf("blobs=%d", n), func(b *testing.B) {
			s := openT(b, b.TempDir(), Options{MaxSize: int64(n) * size})
			settle(b, s)
			s.mu.Lock()
			for i := range n {
				s.insertLocked(&blobEntry{sha: benchSHA(i), Size: size, ATime: int64(i)})
			}
			s.mu.Unlock()
			blobs := make([][]byte, 0, 1024)
			for i := range cap(blobs) {
				blobs = append(blobs, content(1_000_000+i, size))
			}
			i := 0
			for b.Loop() {
				// Bytes come back round after 1024 commits: a commit of a blob
				// evicted since, its delete maybe still queued.
				commit(b, s, blobs[i%len(blobs)])
				i++
			}
			b.StopTimer()
			if got, _, _ := s.Usage(); got > int64(n)*size {
				b.Fatalf("Usage %d over the cap", got)
			}
		})
	}
}

// seedTable writes n blob records into a closed data directory's metadata,
// and with files an empty file for each.
func seedTable(b *testing.B, dir string, n int, files bool) {
	openT(b, dir, Options{}).Close()
	m, err := openMeta(filepath.Join(dir, "meta"), quiet)
	if err != nil {
		b.Fatal(err)
	}
	defer m.close()
	var puts []rawRecord
	now := time.Now().UnixNano() // access times as a store writes them: 19 digits
	for i := range n {
		e := &blobEntry{sha: benchSHA(i), Size: 100, ATime: now - int64((i*7919)%n)*int64(time.Millisecond)}
		puts = append(puts, rawRecord{"b/" + e.sha, e.record()})
		if files {
			if err := os.WriteFile(blobFilePath(dir, e.sha), nil, 0o644); err != nil {
				b.Fatal(err)
			}
		}
		if len(puts) == 10_000 || i == n-1 {
			if err := m.writeNoSync(puts, nil); err != nil {
				b.Fatal(err)
			}
			puts = puts[:0]
		}
	}
	// Compacted, as a table written over weeks is: otherwise every Open of
	// the benchmark competes with the compactions of the bulk load.
	if err := m.db.Compact([]byte("b/"), []byte("b0"), true); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkOpen: what a start waits for before it serves, the blob table read
// from Pebble and ordered; the reconciliation with the files is held back (it
// runs after Open returns: BenchmarkReconcile).
func BenchmarkOpen(b *testing.B) {
	for _, n := range benchSizes(b) {
		b.Run(fmt.Sprintf("blobs=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			seedTable(b, dir, n, false)
			for b.Loop() {
				s, err := Open(dir, Options{Logger: quiet, reconcileGate: make(chan struct{})})
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if _, c, _ := s.Usage(); c != n {
					b.Fatalf("%d blobs loaded, want %d", c, n)
				}
				s.Close()
				b.StartTimer()
			}
		})
	}
}

// BenchmarkReconcile: the background reconciliation after Open, on a table
// whose every record has its file (the usual start: names read, nothing
// adopted or dropped).
func BenchmarkReconcile(b *testing.B) {
	for _, n := range benchSizes(b) {
		b.Run(fmt.Sprintf("blobs=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			seedTable(b, dir, n, true)
			for b.Loop() {
				b.StopTimer()
				gate := make(chan struct{})
				s, err := Open(dir, Options{Logger: quiet, reconcileGate: gate})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				close(gate)
				<-s.Ready()
				b.StopTimer()
				if _, c, _ := s.Usage(); c != n {
					b.Fatalf("%d blobs after reconciliation, want %d", c, n)
				}
				s.Close()
				b.StartTimer()
			}
		})
	}
}
