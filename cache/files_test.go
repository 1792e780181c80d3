package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteFile: a named file is what write produced, and WriteFile reports its true
// size and sha256 (callers publish them as ETags and repodata digests).
func TestWriteFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"small", []byte(`{"packages":{}}`)},
		{"2 MiB in chunks", content(80, 2<<20)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir, Options{})
			size, sha, err := s.WriteFile("repodata.json", func(w io.Writer) error {
				for p := tc.data; len(p) > 0; p = p[min(len(p), 64<<10):] {
					if _, err := w.Write(p[:min(len(p), 64<<10)]); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(tc.data)
			if got, want := size, int64(len(tc.data)); got != want {
				t.Errorf("size = %d, want %d", got, want)
			}
			if got, want := sha, hex.EncodeToString(sum[:]); got != want {
				t.Errorf("sha = %s, want %s", got, want)
			}
			got, err := s.ReadFile("repodata.json")
			if err != nil || !bytes.Equal(got, tc.data) {
				t.Errorf("ReadFile: %d bytes, err %v; want %d bytes", len(got), err, len(tc.data))
			}
			if got := tmpNames(t, dir); len(got) != 0 {
				t.Errorf("tmp/ = %v, want empty", got)
			}
			// Named files are not package blobs: not counted against the cap.
			if n, c, _ := s.Usage(); n != 0 || c != 0 {
				t.Errorf("Usage = %d, %d; want 0, 0", n, c)
			}
		})
	}
}

// TestWriteFileFailure: a write that fails halfway leaves the previous version whole
// and no temp file behind — readers see the old file or the new, never a part.
func TestWriteFileFailure(t *testing.T) {
	boom := errors.New("upstream hung up")
	for _, tc := range []struct {
		name     string
		previous []byte // nil: no previous file
	}{
		{"over an existing file", []byte("old version")},
		{"no previous file", nil},
	} {
		for _, memory := range []int64{0, 1 << 20} {
			t.Run(fmt.Sprintf("%s/memory=%d", tc.name, memory), func(t *testing.T) {
				dir := t.TempDir()
				s := openT(t, dir, Options{Memory: memory})
				if tc.previous != nil {
					if _, _, err := s.WriteFile("f", func(w io.Writer) error { _, err := w.Write(tc.previous); return err }); err != nil {
						t.Fatal(err)
					}
				}
				_, _, err := s.WriteFile("f", func(w io.Writer) error {
					w.Write(content(81, 100_000))
					return boom
				})
				if !errors.Is(err, boom) {
					t.Errorf("WriteFile err = %v, want the write func's error", err)
				}
				got, err := s.ReadFile("f")
				if tc.previous == nil && !errors.Is(err, ErrNotFound) {
					t.Errorf("ReadFile err = %v, want ErrNotFound", err)
				}
				if tc.previous != nil && (err != nil || !bytes.Equal(got, tc.previous)) {
					t.Errorf("ReadFile = %q, %v; want %q", got, err, tc.previous)
				}
				if got := tmpNames(t, dir); len(got) != 0 {
					t.Errorf("tmp/ = %v, want empty", got)
				}
			})
		}
	}
}

// TestFileNames: names are single path elements of a safe alphabet, so no name
// reaches outside files/; the same check guards every entry point.
func TestFileNames(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"repodata.json", true},
		{"conda-forge_linux-64_repodata.json.zst", true},
		{"A1", true},
		{"", false},
		{"../x", false},
		{"a/b", false},
		{"..", false},
		{".hidden", false},
		{"-flag", false},
		{`a\b`, false},
		{"a b", false},
		{"a\x00b", false},
		{strings.Repeat("a", 202), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, werr := s.WriteFile(tc.name, func(w io.Writer) error { _, err := w.Write([]byte("x")); return err })
			_, oerr := s.OpenFile(tc.name)
			rerr := s.RemoveFile(tc.name)
			if tc.ok {
				if werr != nil || oerr != nil || rerr != nil {
					t.Errorf("valid name refused: WriteFile %v, OpenFile %v, RemoveFile %v", werr, oerr, rerr)
				}
				return
			}
			for what, err := range map[string]error{"WriteFile": werr, "OpenFile": oerr, "RemoveFile": rerr} {
				if err == nil || errors.Is(err, ErrNotFound) {
					t.Errorf("%s(%q) err = %v, want a bad-name error", what, tc.name, err)
				}
			}
		})
	}
	// Nothing was written outside files/ (e.g. <dir>/x from "../x" or <dir>/files/a/b).
	if exists(filepath.Join(dir, "x")) || exists(filepath.Join(dir, "files", "a")) {
		t.Error("a bad name wrote a file")
	}
	if got := tmpNames(t, dir); len(got) != 0 {
		t.Errorf("tmp/ = %v, want empty", got)
	}
}

// TestRemoveFile: removal is idempotent, and a removed or replaced file is not served
// from the hot cache afterwards.
func TestRemoveFile(t *testing.T) {
	for _, memory := range []int64{0, 1 << 20} {
		dir := t.TempDir()
		s := openT(t, dir, Options{Memory: memory})
		if err := s.RemoveFile("missing.json"); err != nil {
			t.Errorf("RemoveFile(missing) = %v, want nil", err)
		}
		write := func(v string) {
			if _, _, err := s.WriteFile("f.json", func(w io.Writer) error { _, err := io.WriteString(w, v); return err }); err != nil {
				t.Fatal(err)
			}
		}
		read := func() string {
			b, err := s.ReadFile("f.json")
			if errors.Is(err, ErrNotFound) {
				return "<not found>"
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.hot != nil {
				s.hot.Wait()
			}
			return string(b)
		}
		write("v1")
		read()
		read() // now hot, when memory > 0
		write("v2")
		if got, want := read(), "v2"; got != want {
			t.Errorf("memory=%d: after rewrite ReadFile = %q, want %q", memory, got, want)
		}
		if err := s.RemoveFile("f.json"); err != nil {
			t.Fatal(err)
		}
		if got, want := read(), "<not found>"; got != want {
			t.Errorf("memory=%d: after RemoveFile ReadFile = %q, want %q", memory, got, want)
		}
		if exists(filepath.Join(dir, "files", "f.json")) {
			t.Error("file still on disk after RemoveFile")
		}
		if err := s.RemoveFile("f.json"); err != nil {
			t.Errorf("second RemoveFile = %v, want nil", err)
		}
	}
}
