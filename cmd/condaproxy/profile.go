package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// startProfile writes a CPU profile of the whole serve run to the file
// CONDAPROXY_CPUPROFILE names, when it is set: the bench programs (bench/) run
// the real binary and need to see where its time goes without a debug endpoint
// a client could reach. stop ends the profile; it is safe when none was started.
func startProfile() (stop func(), err error) {
	path := os.Getenv("CONDAPROXY_CPUPROFILE")
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("CONDAPROXY_CPUPROFILE: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("CONDAPROXY_CPUPROFILE: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
