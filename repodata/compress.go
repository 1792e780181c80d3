package repodata

import (
	"compress/bzip2"
	"fmt"
	"io"

	dsbzip2 "github.com/dsnet/compress/bzip2"
	"github.com/klauspost/compress/zstd"
)

// MaxDecoded bounds how much a compressed repodata may expand to. conda-forge's
// largest subdir is ~300 MB of JSON; a "repodata" that inflates past this is refused
// rather than allowed to fill memory (a decompression bomb from a hostile upstream).
const MaxDecoded = 2 << 30

// Decompress returns a reader of the JSON inside a body compressed as encoding
// ("zst", "bz2" or "" for none). The reader fails once MaxDecoded is passed.
func Decompress(r io.Reader, encoding string) (io.ReadCloser, error) {
	var dec io.Reader
	closer := func() {}
	switch encoding {
	case "":
		dec = r
	case "zst":
		zr, err := zstd.NewReader(r, zstd.WithDecoderMaxMemory(MaxDecoded), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		dec, closer = zr, zr.Close
	case "bz2":
		dec = bzip2.NewReader(r)
	default:
		return nil, fmt.Errorf("repodata: unknown encoding %q", encoding)
	}
	return &boundedReader{r: dec, left: MaxDecoded, close: closer}, nil
}

type boundedReader struct {
	r     io.Reader
	left  int64
	close func()
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, fmt.Errorf("repodata: decoded size passes %d bytes", int64(MaxDecoded))
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *boundedReader) Close() error { b.close(); return nil }

// Compress writes the bytes of r to w compressed as encoding ("zst" or "bz2").
// zstd level 3 (default) is what conda-forge serves: fast to make, small enough.
func Compress(w io.Writer, r io.Reader, encoding string) error {
	var cw io.WriteCloser
	var err error
	switch encoding {
	case "zst":
		cw, err = zstd.NewWriter(w, zstd.WithEncoderConcurrency(1))
	case "bz2":
		cw, err = dsbzip2.NewWriter(w, &dsbzip2.WriterConfig{Level: dsbzip2.BestCompression})
	default:
		err = fmt.Errorf("repodata: unknown encoding %q", encoding)
	}
	if err != nil {
		return err
	}
	if _, err := io.Copy(cw, r); err != nil {
		cw.Close()
		return err
	}
	return cw.Close()
}
