package main

import (
	"fmt"
	"io"

	"github.com/condaproxy/condaproxy/config"
	"github.com/condaproxy/condaproxy/config/mirrorconfig"
)

// applyMirrorConfig replaces base's channels by those of an anaconda-mirror or
// cas-sync file, and prints a warning for every key of it that is not honoured.
func applyMirrorConfig(base *config.Config, path string, stderr io.Writer) (*config.Config, error) {
	chs, mirrorDir, warnings, err := mirrorconfig.Load(path)
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		fmt.Fprintln(stderr, "condaproxy: warning:", w)
	}
	return mirrorconfig.Apply(base, chs, mirrorDir)
}
