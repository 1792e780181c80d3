package repodata

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/condaproxy/condaproxy/internal/testdata"
)

func BenchmarkScan(b *testing.B) {
	data, err := os.ReadFile(filepath.Join(testdata.Dir(b), "conda-repodata", "r_linux-64.json"))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Scan(data, func(*Record) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
