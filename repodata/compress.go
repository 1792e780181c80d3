package repodata

import (
	"compress/bzip2"
	"errors"
	"fmt"
	"io"

	dsbzip2 "github.com/dsnet/compress/bzip2"
	"github.com/klauspost/compress/zstd"
)

// MaxDecoded bounds how much a compressed repodata may expand to. conda-forge's
// largest subdir is ~300 MB of JSON; a "repodata" that inflates past this is refused
// rather than allowed to fill memory (a decompression bomb from a hostile upstream).
const MaxDecoded = 2 << 30

// ErrTooLarge is what the reader of DecompressLimit fails with, wrapped, once the
// body decodes to more than its limit or declares that it will (a zstd frame whose
// content size or window passes it). errors.Is tells a bomb, or a repodata past
// limits.max_repodata, from a network or format error.
var ErrTooLarge = errors.New("repodata: decoded size passes the limit")

// Decompress is DecompressLimit with the limit MaxDecoded.
func Decompress(r io.Reader, encoding string) (io.ReadCloser, error) {
	return DecompressLimit(r, encoding, MaxDecoded)
}

// MaxWindow is the largest zstd window a repodata may ask the decoder for.
const MaxWindow = 128 << 20

// DecompressLimit returns a reader of the JSON inside a body compressed as
// encoding ("zst", "bz2" or "" for none). The reader fails with ErrTooLarge once
// the body decodes to more than limit bytes; a body of exactly limit bytes reads
// whole. The decoder's own memory is bounded too: zstd keeps at most a window of
// MaxWindow and refuses a frame that asks for more, bzip2 keeps one
// block (at most 900 kB, 4 bytes a byte) whatever the body.
func DecompressLimit(r io.Reader, encoding string, limit int64) (io.ReadCloser, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("repodata: decompression limit %d is not positive", limit)
	}
	var dec io.Reader
	closer := func() {}
	switch encoding {
	case "":
		dec = r
	case "zst":
		// The window is what the decoder allocates ahead of the output, whatever
		// the output's size: a 32 KiB frame declaring a 512 MiB window costs
		// 512 MiB. It is a back-reference distance, not a size, so it is capped
		// on its own: at MaxWindow, what `zstd --ultra -22` and `--long=27` use
		// (conda-forge's repodata uses 8 MiB). Bodies that offer Bytes() are
		// otherwise decoded whole into memory; 0 keeps every body streamed.
		zr, err := zstd.NewReader(r,
			// The library caps the window at MaxMemory too: never below MaxWindow,
			// or a small limit would refuse ordinary windows; the output itself is
			// bounded by boundedReader below.
			zstd.WithDecoderMaxMemory(uint64(max(limit, MaxWindow))),
			zstd.WithDecoderMaxWindow(MaxWindow),
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecodeBuffersBelow(0))
		if err != nil {
			return nil, err
		}
		dec, closer = zr, zr.Close
	case "bz2":
		dec = bzip2.NewReader(r)
	default:
		return nil, fmt.Errorf("repodata: unknown encoding %q", encoding)
	}
	return &boundedReader{r: dec, left: limit, limit: limit, close: closer}, nil
}

type boundedReader struct {
	r     io.Reader
	left  int64
	limit int64
	close func()
	probe [1]byte
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// limit bytes are read: the body may end exactly here, so look one byte
		// further before calling it too large.
		n, err := io.ReadFull(b.r, b.probe[:])
		if n == 0 && (err == io.EOF || err == io.ErrUnexpectedEOF) {
			return 0, io.EOF
		}
		if n == 0 {
			return 0, b.wrap(err)
		}
		return 0, b.tooLarge()
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, b.wrap(err)
}

func (b *boundedReader) tooLarge() error {
	return fmt.Errorf("%w of %d bytes", ErrTooLarge, b.limit)
}

// wrap turns the zstd decoder's own refusals of a frame too large for its
// limits into ErrTooLarge.
func (b *boundedReader) wrap(err error) error {
	if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
		return fmt.Errorf("%w of %d bytes (zstd: %v)", ErrTooLarge, b.limit, err)
	}
	return err
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
