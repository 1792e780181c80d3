//go:build !linux

package cache

// dropPages and populate are Linux's page hints (madvise_linux.go). Elsewhere
// a mapped document's pages stay resident until it is unmapped, as any
// mapping's do, and fault in as they are read.
func dropPages([]byte, int)     {}
func populate([]byte, int, int) {}
