package bench

// This file fills a data directory with many small package blobs, fast, for the
// programs that measure the cache at a million blobs (./evict, ./start).
// Committing a million blobs through cache.Temp would take hours here (each
// commit fsyncs its file and a Pebble write); writing the files straight into
// blobs/<sha[:2]>/<sha> takes seconds, and the store adopts them at its next
// Open (cache.Store.load: a file without a table entry is taken in as it is,
// without being hashed again), which gives the same table a store that had
// committed them would have.

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/condaproxy/condaproxy/cache"
)

// Blobs is a set of blobs MakeBlobs wrote into a data directory.
type Blobs struct {
	Dir  string // the data directory
	Seed uint64
	Size int // bytes per blob
	// SHAs are the blobs' sha256 (their names), in index order: blob i's bytes
	// are BlobContent(Seed, i, Size). Raw, not hex, so a million of them take
	// 32 MB and not the 80 MB of strings.
	SHAs [][32]byte
}

// Name is blob i's name: its sha256 in hex, as the store knows it.
func (b *Blobs) Name(i int) string { return hex.EncodeToString(b.SHAs[i][:]) }

// Total is the bytes of all the blobs together.
func (b *Blobs) Total() int64 { return int64(len(b.SHAs)) * int64(b.Size) }

// BlobContent is the content of blob i of the set seed: size pseudo-random bytes,
// the same every run, distinct for every (seed, i). It is a chain of sha256 blocks
// of (seed, i, block), which is as fast as a seeded generator for 64 bytes and
// needs no state between calls, so writers can make any index in any order.
func BlobContent(seed uint64, i int, size int) []byte {
	out := make([]byte, 0, size+sha256.Size)
	var in [24]byte
	binary.LittleEndian.PutUint64(in[0:], seed)
	binary.LittleEndian.PutUint64(in[8:], uint64(i))
	for block := uint64(0); len(out) < size; block++ {
		binary.LittleEndian.PutUint64(in[16:], block)
		sum := sha256.Sum256(in[:])
		out = append(out, sum[:]...)
	}
	return out[:size]
}

// MakeBlobs writes n blobs of size bytes into dataDir/blobs/<sha[:2]>/<sha>, the
// layout cache.Store commits to, with no table entry: the next cache.Open adopts
// them. Each file is named by the sha256 of its bytes, so the store serves them
// and VerifyBlob passes, as for blobs it fetched itself. Nothing is fsynced: the
// files are for a benchmark, and the page cache holds them.
//
// All 256 fan-out directories are made first (cache.Open makes them too, but the
// files go in before it runs). Then 2×GOMAXPROCS writers (at least 4) share the
// indices, writer w taking w, w+W, w+2W...: creating a file is mostly kernel
// time, so the writers keep every core busy, and with names spread evenly over
// 256 directories two writers rarely want the same directory's lock at once.
func MakeBlobs(dataDir string, n, size int, seed uint64) (*Blobs, error) {
	if n < 0 || size <= 0 {
		return nil, fmt.Errorf("MakeBlobs: n = %d, size = %d", n, size)
	}
	blobsDir := filepath.Join(dataDir, "blobs")
	for i := 0; i < 256; i++ {
		if err := os.MkdirAll(filepath.Join(blobsDir, fmt.Sprintf("%02x", i)), 0o755); err != nil {
			return nil, err
		}
	}
	b := &Blobs{Dir: dataDir, Seed: seed, Size: size, SHAs: make([][32]byte, n)}
	workers := max(4, 2*runtime.GOMAXPROCS(0))
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One path buffer per writer: a million filepath.Join calls would be a
			// million small garbage strings for nothing.
			path := []byte(blobsDir + "/xx/")
			prefix := len(path)
			for i := w; i < n; i += workers {
				data := BlobContent(seed, i, size)
				sum := sha256.Sum256(data)
				b.SHAs[i] = sum
				path = path[:prefix]
				path = hex.AppendEncode(path, sum[:])
				copy(path[prefix-3:prefix-1], path[prefix:prefix+2])
				if err := os.WriteFile(string(path), data, 0o644); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

// TouchAll opens and closes every blob of b once in a random order (from rng), so
// that their access times are distinct and ordered as in a cache that has served
// them. Adoption gives every blob the same access time (the time of the Open),
// which would let an eviction index get away with ordering a million equal keys.
// It returns the indices in the order they were touched: least recently used
// first. The times reach the table when the store is closed (its last flush).
func TouchAll(st *cache.Store, b *Blobs, rng *rand.Rand) ([]int, error) {
	order := rng.Perm(len(b.SHAs))
	for _, i := range order {
		blob, err := st.OpenBlob(b.Name(i))
		if err != nil {
			return nil, fmt.Errorf("touch blob %d (%s): %w", i, b.Name(i), err)
		}
		blob.Close()
	}
	return order, nil
}

// WaitReady waits until st has squared its blob table with the files (it does
// so in the background after Open): until then a file without a table entry is
// not adopted yet, and a Close stops it half-way, so a data directory prepared
// for a benchmark must wait for it.
func WaitReady(st *cache.Store) { <-st.Ready() }
