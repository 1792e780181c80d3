package cache

import (
	"hash"
	"os"
	"sync"
)

// pipeWriter writes to a file and a hash on a goroutine of its own, a few
// buffers behind the producer: a repodata build (scan, filter, encode) and
// the sha256 and write(2) of what it produces then use two cores, not one
// after the other. For a 300 MB document that is half a second of hashing and
// a fifth of writing taken off the build's wall time.
//
// As it goes it asks the kernel to start writing back what it wrote
// (startWriteback), so the fsync at the end waits for the last few megabytes,
// not for the whole file.
type pipeWriter struct {
	f     *os.File
	h     hash.Hash
	buf   []byte
	spare int // buffers not yet taken from the pool
	full  chan []byte
	free  chan []byte
	done  chan struct{}

	mu     sync.Mutex
	err    error // the first write error; Write returns it from then on
	closed bool
}

// pipeBuffers are the writers' buffers, shared: a small file (a subdir of a
// few records, a shard pack) takes one and gives it back, not four.
var pipeBuffers = sync.Pool{New: func() any { b := make([]byte, 0, pipeBuf); return &b }}

func getBuffer() []byte  { return (*pipeBuffers.Get().(*[]byte))[:0] }
func putBuffer(b []byte) { pipeBuffers.Put(&b) }

const (
	pipeBuf   = 1 << 20
	pipeDepth = 4
	// writebackEvery is how much is written between two startWriteback calls.
	writebackEvery = 8 << 20
)

func newPipeWriter(f *os.File, h hash.Hash) *pipeWriter {
	p := &pipeWriter{f: f, h: h, full: make(chan []byte, pipeDepth), free: make(chan []byte, pipeDepth), done: make(chan struct{})}
	p.buf = getBuffer()
	p.spare = pipeDepth - 1
	go p.drain()
	return p
}

func (p *pipeWriter) drain() {
	defer close(p.done)
	var off, synced int64
	for b := range p.full {
		if p.failed() == nil {
			p.h.Write(b)
			if _, err := p.f.Write(b); err != nil {
				p.fail(err)
			}
			off += int64(len(b))
			if off-synced >= writebackEvery {
				startWriteback(p.f, synced, off-synced)
				synced = off
			}
		}
		p.free <- b[:0]
	}
}

func (p *pipeWriter) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
}

func (p *pipeWriter) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Write copies b into the current buffer, handing full ones to the writer.
func (p *pipeWriter) Write(b []byte) (int, error) {
	if err := p.failed(); err != nil {
		return 0, err
	}
	n := len(b)
	for len(b) > 0 {
		c := copy(p.buf[len(p.buf):cap(p.buf)], b)
		p.buf = p.buf[:len(p.buf)+c]
		b = b[c:]
		if len(p.buf) == cap(p.buf) {
			p.full <- p.buf
			if p.spare > 0 {
				// Buffers are taken as the file grows, up to pipeDepth.
				p.spare--
				p.buf = getBuffer()
			} else {
				p.buf = <-p.free
			}
		}
	}
	return n, nil
}

// Close hands over the last buffer and waits until everything is written and
// hashed; it returns the first write error. Safe to call again (it then only
// returns that error).
func (p *pipeWriter) Close() error {
	if p.closed {
		return p.failed()
	}
	p.closed = true
	if len(p.buf) > 0 {
		p.full <- p.buf
	} else {
		putBuffer(p.buf)
	}
	p.buf = nil
	close(p.full)
	<-p.done
	for len(p.free) > 0 {
		putBuffer(<-p.free)
	}
	return p.failed()
}
