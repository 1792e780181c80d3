//go:build !unix

package main

import "time"

// cpuTime is unknown here (-1): the CPU column reads n/a.
func cpuTime() time.Duration { return -1 }
