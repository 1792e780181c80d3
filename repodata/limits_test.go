package repodata

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// deep returns n opening brackets then n closing ones: well-formed JSON nested n
// levels deep, 2n bytes.
func deep(n int) []byte {
	return append(bytes.Repeat([]byte("["), n), bytes.Repeat([]byte("]"), n)...)
}

// deepDocs are documents that put a deep value everywhere a walk can meet one.
func deepDocs(n int) map[string][]byte {
	v := string(deep(n))
	return map[string][]byte{
		"top-level key":  []byte(`{"signatures":` + v + `}`),
		"info member":    []byte(`{"info":{"subdir":"noarch","x":` + v + `}}`),
		"record value":   []byte(`{"packages":{"a-1-0.tar.bz2":{"name":"a","version":"1","build":"0","x":` + v + `}}}`),
		"skipped record": []byte(`{"packages":{"a-1-0.tar.bz2":{"run_exports":` + v + `}}}`),
	}
}

// entryPoints are the functions that read untrusted JSON in this package.
var entryPoints = map[string]func(data []byte) error{
	"Parse": func(data []byte) error { _, err := Parse(data); return err },
	"Scan":  func(data []byte) error { _, err := Scan(data, func(*Record) error { return nil }); return err },
	"Scan head": func(data []byte) error {
		_, err := Scan(data, nil)
		return err
	},
	"ScanSection": func(data []byte) error {
		_, err := ScanSection(data, true, func(*Record) error { return nil })
		return err
	},
	"FilterPackages": func(data []byte) error {
		return FilterPackages(io.Discard, data, func(string) bool { return true })
	},
	// The walk itself, on a document that is nothing but nesting.
	"skip": func(data []byte) error {
		s := &scanner{data: data}
		return s.skip()
	},
}

func wantDepthError(t *testing.T, err error) {
	t.Helper()
	var se *SyntaxError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "nested deeper than 64") {
		t.Fatalf("error = %v, want a *SyntaxError saying nested deeper than 64", err)
	}
}

// TestDepthLimit: a document nested a million or ten million levels deep (a few
// megabytes a hostile upstream can send) is refused at level 65, whichever entry
// point reads it, without the stack or heap growing with the depth. Before the
// limit, a million levels took ~500 MB and ten million overflowed the stack.
func TestDepthLimit(t *testing.T) {
	for _, n := range []int{1_000_000, 10_000_000} {
		docs := deepDocs(n)
		docs["bare"] = deep(n)
		for doc, data := range docs {
			for name, read := range entryPoints {
				// A bare array is no repodata (refused at its first byte) but
				// is what the walk itself must survive.
				if (doc == "bare") != (name == "skip") {
					continue
				}
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				err := read(data)
				runtime.ReadMemStats(&after)
				wantDepthError(t, err)
				// A refused document costs what refusing it at level 65 costs:
				// nothing like the size of the document, let alone its depth.
				if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
					t.Errorf("%d levels, %s, %s: %d bytes allocated", n, doc, name, grew)
				}
				if after.StackInuse > before.StackInuse+1<<20 {
					t.Errorf("%d levels, %s, %s: stack grew from %d to %d bytes", n, doc, name, before.StackInuse, after.StackInuse)
				}
			}
		}
	}
	data := deepDocs(1_000_000)["record value"]
	allocs := testing.AllocsPerRun(10, func() { Parse(data) })
	if allocs > 50 {
		t.Errorf("refusing a deep document takes %.0f allocations", allocs)
	}
}

// TestDepthLimitBoundary: 64 levels, the whole document counted, are accepted;
// 65 are refused, with the offset of the bracket that went too deep.
func TestDepthLimitBoundary(t *testing.T) {
	// The top-level object is level 1, so the value of its key may nest 63 more.
	ok := []byte(`{"x":` + string(deep(MaxDepth-1)) + `}`)
	if _, err := Parse(ok); err != nil {
		t.Fatalf("%d levels refused: %v", MaxDepth, err)
	}
	if err := FilterPackages(io.Discard, ok, func(string) bool { return true }); err != nil {
		t.Fatalf("FilterPackages: %d levels refused: %v", MaxDepth, err)
	}
	tooDeep := []byte(`{"x":` + string(deep(MaxDepth)) + `}`)
	_, err := Parse(tooDeep)
	wantDepthError(t, err)
	var se *SyntaxError
	errors.As(err, &se)
	if want := len(`{"x":`) + MaxDepth - 1; se.Offset != want || tooDeep[se.Offset] != '[' {
		t.Errorf("offset %d, want %d (the 65th bracket)", se.Offset, want)
	}
	// Siblings do not add up: depth is nesting, not count.
	wide := []byte(`{"x":[` + strings.Repeat(string(deep(MaxDepth-2))+",", 1000) + `[]]}`)
	if _, err := Parse(wide); err != nil {
		t.Fatalf("1000 siblings %d levels deep refused: %v", MaxDepth, err)
	}
	// Records nest as deep as the limit allows too: the run_exports.json shape.
	runExports := []byte(`{"packages":{"a-1-0.tar.bz2":{"run_exports":{"weak":["a"]},"x":` + string(deep(MaxDepth-3)) + `}}}`)
	if err := FilterPackages(io.Discard, runExports, func(string) bool { return true }); err != nil {
		t.Fatalf("FilterPackages: %v", err)
	}
}

// bomb compresses n zero bytes as encoding: the shape of a decompression bomb.
// zstd is written as a stream (no content size in the header) with a window of
// window bytes, or, when window is 0, in one frame that declares its size, or,
// when window is -1, by Compress.
func bomb(t *testing.T, encoding string, n int64, window int) []byte {
	t.Helper()
	var out bytes.Buffer
	switch {
	case encoding == "zst" && window < 0:
		if err := Compress(&out, io.LimitReader(zeros{}, n), encoding); err != nil {
			t.Fatal(err)
		}
	case encoding == "zst" && window == 0:
		enc, _ := zstd.NewWriter(nil)
		return enc.EncodeAll(make([]byte, n), nil)
	case encoding == "zst":
		enc, err := zstd.NewWriter(&out, zstd.WithWindowSize(window))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(enc, zeros{}, n); err != nil {
			t.Fatal(err)
		}
		if err := enc.Close(); err != nil {
			t.Fatal(err)
		}
	default:
		if err := Compress(&out, io.LimitReader(zeros{}, n), encoding); err != nil {
			t.Fatal(err)
		}
	}
	return out.Bytes()
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestDecompressLimit: a body that decodes to more than the limit fails with
// ErrTooLarge, whether the decoder notices from a header or the bytes are
// counted, and decoding it costs about the same memory however large it claims
// or turns out to be. A body of exactly the limit reads whole.
func TestDecompressLimit(t *testing.T) {
	const limit = 1 << 20
	tests := []struct {
		name     string
		encoding string
		body     []byte
		wantErr  bool
	}{
		{"plain at the limit", "", make([]byte, limit), false},
		{"plain past the limit", "", make([]byte, limit+1), true},
		{"zstd at the limit, size declared", "zst", bomb(t, "zst", limit, 0), false},
		{"zstd at the limit, streamed", "zst", bomb(t, "zst", limit, limit), false},
		{"zstd past the limit, size declared", "zst", bomb(t, "zst", limit+1, 0), true},
		{"zstd past the limit, streamed", "zst", bomb(t, "zst", limit+1, limit), true},
		{"zstd 64 MiB, streamed", "zst", bomb(t, "zst", 64<<20, limit), true},
		// A frame that asks for a 512 MiB window to decode 5 bytes: its header
		// alone is refused, before the decoder sets aside what it asks for.
		{"zstd window past MaxWindow", "zst", []byte{
			0x28, 0xb5, 0x2f, 0xfd, // magic
			0x00,             // frame header: no content size, not single segment, no checksum
			19 << 3,          // window 2^(10+19) = 512 MiB
			0x29, 0x00, 0x00, // last block, raw, 5 bytes
			'h', 'e', 'l', 'l', 'o'}, true},
		{"zstd as Compress writes it", "zst", bomb(t, "zst", limit+1, -1), true},
		{"bz2 at the limit", "bz2", bomb(t, "bz2", limit, 0), false},
		{"bz2 past the limit", "bz2", bomb(t, "bz2", limit+1, 0), true},
		{"bz2 4 MiB", "bz2", bomb(t, "bz2", 4<<20, 0), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			r, err := DecompressLimit(bytes.NewReader(tt.body), tt.encoding, limit)
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, r)
			r.Close()
			runtime.ReadMemStats(&after)
			if !tt.wantErr {
				if err != nil || n != limit {
					t.Fatalf("read %d bytes, error %v; want %d bytes", n, err, limit)
				}
				return
			}
			if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "passes the limit of 1048576 bytes") {
				t.Fatalf("read %d bytes, error %v; want ErrTooLarge naming the limit", n, err)
			}
			if n > limit {
				t.Errorf("read %d bytes past the limit", n)
			}
			// Flat: the decoder's window (Compress writes 8 MiB ones) and bzip2's
			// one block, not the size of the output.
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 12<<20 {
				t.Errorf("refusing it allocated %d bytes", grew)
			}
		})
	}
}

// zstdFrame is a hand-made frame: a window of 1<<windowLog bytes, no declared
// size, and one RLE block of n bytes of 'x'.
func zstdFrame(windowLog uint, n int) []byte {
	b := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, byte((windowLog - 10) << 3)}
	h := uint32(n)<<3 | 1<<1 | 1 // size, RLE, last block
	return append(b, byte(h), byte(h>>8), byte(h>>16), 'x')
}

// A window is a back-reference distance, not a size: a tiny frame that asks for
// a 512 MiB one is refused at its header whatever the limit (it would cost the
// memory it asks for), and one with an ordinary 8 MiB window decodes under a limit
// smaller than the window.
func TestZstdWindowBoundedApartFromLimit(t *testing.T) {
	r, err := DecompressLimit(bytes.NewReader(zstdFrame(29, 1000)), "zst", 2<<30)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = io.ReadAll(r)
	runtime.ReadMemStats(&after)
	r.Close()
	if !errors.Is(err, ErrTooLarge) {
		t.Errorf("512 MiB window: %v, want ErrTooLarge", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Errorf("refusing a 512 MiB window allocated %d MiB", grew>>20)
	}
	r, err = DecompressLimit(bytes.NewReader(zstdFrame(23, 1000)), "zst", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(r)
	r.Close()
	if err != nil || len(out) != 1000 {
		t.Errorf("8 MiB window under a 1 MiB limit: %d bytes, %v", len(out), err)
	}
}
