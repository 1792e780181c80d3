// Package cache keeps what the proxy fetched: package blobs as content-addressed
// files on disk, metadata in Pebble, and hot bytes in a ristretto memory cache.
//
// Its invariants, which every caller relies on:
//   - A blob file exists under blobs/ only if its size and digest were verified:
//     bytes are written to tmp/, checked, fsynced and renamed into place; the
//     metadata that says "present" is written after the rename. tmp/ is emptied at
//     open, so a process killed mid-write leaves nothing visible.
//   - The package store stays under its size limit by evicting the least recently
//     used blobs, never one that is open for reading.
//   - Open reads the blob table only; the files are squared with it in the
//     background (Store.Ready), so a blob file left without its record by a
//     crash is served only from then on.
//   - A newer data directory format is refused, never misread.
//
// The package knows nothing of HTTP, conda or upstreams.
package cache
