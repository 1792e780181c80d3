package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// TestWriteFilePipelined: bytes written in odd-sized pieces across several of
// the writer's buffers arrive whole, with their sha256; an error from write
// and a panic in it leave no temp file and no writer goroutine behind.
func TestWriteFilePipelined(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	data := make([]byte, 5*pipeBuf+12345)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	size, sha, err := s.WriteFile("big.json", func(w io.Writer) error {
		for rest := data; len(rest) > 0; {
			n := min(len(rest), 100_003)
			if _, err := w.Write(rest[:n]); err != nil {
				return err
			}
			rest = rest[n:]
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if size != int64(len(data)) || sha != hex.EncodeToString(sum[:]) {
		t.Fatalf("WriteFile = %d, %s; want %d, %x", size, sha, len(data), sum)
	}
	if got, err := s.ReadFile("big.json"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v, equal %v", err, bytes.Equal(got, data))
	}

	before := runtime.NumGoroutine()
	boom := errors.New("boom")
	for i := 0; i < 10; i++ {
		_, _, err := s.WriteFile("failed.json", func(w io.Writer) error {
			w.Write(data[:3*pipeBuf])
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("WriteFile with a failing write: %v", err)
		}
		func() {
			defer func() { recover() }()
			s.WriteFile("panicked.json", func(w io.Writer) error {
				w.Write(data[:2*pipeBuf])
				panic("fault under a mapped document")
			})
		}()
	}
	if s.HasFile("failed.json") || s.HasFile("panicked.json") {
		t.Fatal("a failed write left a named file")
	}
	left, _ := filepath.Glob(filepath.Join(s.dir, "tmp", "file-*"))
	if len(left) > 0 {
		t.Fatalf("failed writes left temp files: %v", left)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after 20 failed writes, %d before: writers left behind", n, before)
	}
}
