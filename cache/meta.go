package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/cockroachdb/pebble"
)

// Meta is the small-record store: JSON values under string keys, in Pebble.
// Keys are namespaced by a prefix and '/', e.g. "b/<sha256>" for blobs; each
// package that stores metadata owns its prefixes.
type Meta struct {
	db *pebble.DB
}

// ErrLocked is returned when another process holds the data directory.
var ErrLocked = errors.New("data directory is in use by another condaproxy process")

func openMeta(path string, log *slog.Logger) (*Meta, error) {
	db, err := pebble.Open(path, &pebble.Options{Logger: pebbleLogger{log}})
	if err != nil {
		if isLockErr(err) {
			return nil, fmt.Errorf("%w (%s)", ErrLocked, path)
		}
		return nil, fmt.Errorf("open metadata store %s: %w", path, err)
	}
	return &Meta{db: db}, nil
}

// Get decodes the value at key into v, and reports whether it was there.
func (m *Meta) Get(key string, v any) (bool, error) {
	val, closer, err := m.db.Get([]byte(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer closer.Close()
	if err := json.Unmarshal(val, v); err != nil {
		return false, fmt.Errorf("metadata %q: %w", key, err)
	}
	return true, nil
}

// Put stores v at key durably.
func (m *Meta) Put(key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return m.db.Set([]byte(key), b, pebble.Sync)
}

// Delete removes key.
func (m *Meta) Delete(key string) error {
	return m.db.Delete([]byte(key), pebble.Sync)
}

// Scan calls fn with each key under prefix, in key order, and its raw JSON value;
// fn's error stops the scan.
func (m *Meta) Scan(prefix string, fn func(key string, val []byte) error) error {
	return m.scanRaw(prefix, func(key, val []byte) error { return fn(string(key), val) })
}

// scanRaw is Scan without a string made of each key, for the blob table's
// million keys at Open: key and val are valid only during the call.
func (m *Meta) scanRaw(prefix string, fn func(key, val []byte) error) error {
	return m.scanRange(prefix, prefix+"\xff", fn)
}

// scanRange is scanRaw of the keys from lower up to, not including, upper.
func (m *Meta) scanRange(lower, upper string, fn func(key, val []byte) error) error {
	it, err := m.db.NewIter(&pebble.IterOptions{LowerBound: []byte(lower), UpperBound: []byte(upper)})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		if err := fn(it.Key(), it.Value()); err != nil {
			return err
		}
	}
	return it.Error()
}

// rawRecord is a key and its value already encoded (JSON).
type rawRecord struct {
	key string
	val []byte
}

// putRaw stores an encoded value at key; sync waits for the disk.
func (m *Meta) putRaw(key string, val []byte, sync bool) error {
	opt := pebble.NoSync
	if sync {
		opt = pebble.Sync
	}
	return m.db.Set([]byte(key), val, opt)
}

// writeNoSync sets and deletes keys in one batch without waiting for the disk:
// for writes a crash may lose, because the next Open repairs them from the
// files (the blob table's adoptions, drops and evictions) or because losing them
// only makes the LRU order slightly wrong (access times).
func (m *Meta) writeNoSync(puts []rawRecord, dels []string) error {
	if len(puts) == 0 && len(dels) == 0 {
		return nil
	}
	b := m.db.NewBatch()
	defer b.Close()
	for _, p := range puts {
		if err := b.Set([]byte(p.key), p.val, nil); err != nil {
			return err
		}
	}
	for _, k := range dels {
		if err := b.Delete([]byte(k), nil); err != nil {
			return err
		}
	}
	return b.Commit(pebble.NoSync)
}

// Batch is a set of writes that reach the store together: after a crash, all of
// them or none. Readers see none of them until Commit returns.
type Batch struct {
	b         *pebble.Batch
	committed bool // Commit was called, whatever it returned
	closed    bool
	// Hooks of what joined the batch from outside Pebble (blobs placed for it):
	// onCommit runs once the batch is durable; onAbort when it is closed without
	// Commit ever being called.
	onCommit, onAbort []func()
}

// NewBatch starts a batch. Close it when done, committed or not.
func (m *Meta) NewBatch() *Batch { return &Batch{b: m.db.NewBatch()} }

// Put adds v at key to the batch.
func (b *Batch) Put(key string, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.b.Set([]byte(key), raw, nil)
}

// Delete adds the removal of key to the batch.
func (b *Batch) Delete(key string) error { return b.b.Delete([]byte(key), nil) }

// Len is the batch's size in bytes, as Pebble holds it in memory.
func (b *Batch) Len() int { return b.b.Len() }

// Commit applies the batch atomically and durably (fsync).
func (b *Batch) Commit() error {
	if b.committed || b.closed {
		return errors.New("cache: batch already committed or closed")
	}
	b.committed = true
	if err := b.b.Commit(pebble.Sync); err != nil {
		// Whether it reached the disk is unknown: the abort hooks (which undo
		// what the batch would have referenced) must not run.
		return err
	}
	for _, fn := range b.onCommit {
		fn()
	}
	return nil
}

// Close releases the batch. A batch never committed is dropped, and what was
// placed for it is undone.
func (b *Batch) Close() {
	if b.closed {
		return
	}
	b.closed = true
	if !b.committed {
		for _, fn := range b.onAbort {
			fn()
		}
	}
	b.b.Close()
}

func (m *Meta) close() error { return m.db.Close() }

// pebbleLogger sends Pebble's own messages to slog instead of stderr.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...), "component", "pebble")
}
func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
}
func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...), "component", "pebble")
	panic(fmt.Sprintf(format, args...))
}
