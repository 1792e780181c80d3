// Package fsdir holds what the stores on local disk do to directories.
package fsdir

import "os"

// Sync fsyncs the directory dir, making the entries created, renamed or
// removed in it so far durable: a rename or a new file survives a power cut
// only once its directory is synced.
func Sync(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
