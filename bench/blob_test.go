package bench

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/condaproxy/condaproxy/cache"
)

// BenchmarkBlobServeContent1MiB isolates the hand-off from the store to
// http.ServeContent that proxy.serveBlob makes, over a loopback connection, without
// the rest of the proxy:
//
//   - disk/Blob: ServeContent(w, r, "", t, blob) with blob a *cache.Blob on the
//     disk tier, as serveBlob does. The *cache.Blob wrapper hides the *os.File, so
//     net/http cannot use sendfile and copies through a 32 KiB buffer.
//   - disk/ReadSeeker: ServeContent(..., blob.ReadSeeker): the *os.File itself, so
//     sendfile is used (what a bare Go server gets).
//   - memory/Blob: the memory tier (a bytes.Reader): 32 KiB write()s, and a 32 KiB
//     buffer allocated per response.
func BenchmarkBlobServeContent1MiB(b *testing.B) {
	ch, err := BuildChannel(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		memory int64
		unwrap bool
	}{
		{"disk/Blob", 0, false},
		{"disk/ReadSeeker", 0, true},
		{"memory/Blob", 64 << 20, false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			log := slog.New(slog.NewJSONHandler(io.Discard, nil))
			store, err := cache.Open(b.TempDir(), cache.Options{Memory: tc.memory, Logger: log})
			if err != nil {
				b.Fatal(err)
			}
			defer store.Close()
			tmp, err := store.NewTemp()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := tmp.Write(ch.PkgBytes); err != nil {
				b.Fatal(err)
			}
			sha, err := tmp.Commit(cache.Digest{Size: PkgSize, SHA256: ch.PkgSHA256})
			if err != nil {
				b.Fatal(err)
			}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				blob, err := store.OpenBlob(sha)
				if err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				defer blob.Close()
				w.Header().Set("Content-Type", "application/octet-stream")
				if tc.unwrap {
					http.ServeContent(w, r, "", time.Time{}, blob.ReadSeeker)
				} else {
					http.ServeContent(w, r, "", time.Time{}, blob)
				}
			}))
			defer srv.Close()
			c := newClient()
			defer c.CloseIdleConnections()
			// Warm (the memory tier fills on the first open) and verify.
			for range 3 {
				if got := getOK(b, c, srv.URL); !bytes.Equal(got, ch.PkgBytes) {
					b.Fatalf("served sha256 %s, want %s", SHA256(got), ch.PkgSHA256)
				}
				time.Sleep(10 * time.Millisecond)
			}
			benchGet(b, c, srv.URL, PkgSize)
		})
	}
}
