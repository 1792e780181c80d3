package cache

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// killChildEnv makes the test binary, re-executed by TestKillMidWrite, play the
// process that gets killed: its value is the data directory.
const killChildEnv = "CONDAPROXY_CACHE_KILL_CHILD_DIR"

var (
	killSurvivor = content(90, 10_000)   // committed before the kill
	killFile     = []byte("repodata v1") // named file written before the kill
	killPartial  = content(91, 8<<20)    // bytes of the fill the kill interrupts
)

// TestKillMidWrite: a process killed with SIGKILL in the middle of a blob fill and of
// a named-file write leaves nothing visible: after reopening, only what was committed
// before exists and tmp/ is empty. While the child still runs, a second process is
// refused with ErrLocked and does not touch its tmp/.
func TestKillMidWrite(t *testing.T) {
	if dir := os.Getenv(killChildEnv); dir != "" {
		killChild(dir) // does not return
	}
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillMidWrite$", "-test.count=1")
	cmd.Env = append(os.Environ(), killChildEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})

	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "READY ") || strings.HasPrefix(l, "ERR ") {
				lines <- l
				break
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	var fillPath string
	select {
	case l := <-lines:
		if !strings.HasPrefix(l, "READY ") {
			t.Fatalf("child: %s\n%s", l, stderr.String())
		}
		fillPath = strings.TrimPrefix(l, "READY ")
	case <-time.After(60 * time.Second):
		t.Fatalf("child never got mid-write; stderr:\n%s", stderr.String())
	}

	// The child really is mid-write: its fill and its named-file write are in tmp/.
	if info, err := os.Stat(fillPath); err != nil || info.Size() != int64(len(killPartial)) {
		t.Fatalf("child's fill %s: %v, want %d bytes written", fillPath, err, len(killPartial))
	}
	if got := tmpNames(t, dir); len(got) != 2 {
		t.Fatalf("tmp/ while child writes = %v, want its fill and its file", got)
	}

	// Another process on the same directory is refused, and does not clear tmp/.
	if s, err := Open(dir, Options{Logger: quiet}); !errors.Is(err, ErrLocked) {
		if s != nil {
			s.Close()
		}
		t.Errorf("Open while another process holds the directory: err = %v, want ErrLocked", err)
	}
	if got := tmpNames(t, dir); len(got) != 2 {
		t.Errorf("tmp/ after refused Open = %v, want the child's 2 files untouched", got)
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want killed by SIGKILL; stderr:\n%s", cmd.ProcessState, stderr.String())
	}

	s := openT(t, dir, Options{})
	// The survivor's record may be lost with the process (it is written
	// unsynced); its file is then adopted by the check after Open.
	settle(t, s)
	if got := tmpNames(t, dir); len(got) != 0 {
		t.Errorf("tmp/ after reopen = %v, want empty", got)
	}
	want := map[string]int64{shaOf(killSurvivor): int64(len(killSurvivor))}
	if got := blobFiles(t, dir); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("blobs/ = %v, want only the committed blob %v", got, want)
	}
	if n, c, _ := s.Usage(); n != int64(len(killSurvivor)) || c != 1 {
		t.Errorf("Usage = %d bytes, %d blobs; want %d, 1", n, c, len(killSurvivor))
	}
	if s.Has(shaOf(killPartial)) {
		t.Error("the interrupted fill is visible")
	}
	if got, err := readBlob(s, shaOf(killSurvivor)); err != nil || !bytes.Equal(got, killSurvivor) {
		t.Errorf("committed blob: %d bytes, err %v", len(got), err)
	}
	if got, err := s.ReadFile("repodata.json"); err != nil || !bytes.Equal(got, killFile) {
		t.Errorf("named file = %q, %v; want the version before the kill %q", got, err, killFile)
	}
}

// killChild commits a blob and a named file, then starts a fill and a file rewrite,
// says where it is, and waits to be killed.
func killChild(dir string) {
	fail := func(err error) {
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	s, err := Open(dir, Options{Logger: quiet})
	if err != nil {
		fail(err)
	}
	tmp, err := s.NewTemp()
	if err != nil {
		fail(err)
	}
	tmp.Write(killSurvivor)
	if _, err := tmp.Commit(digestOf(killSurvivor)); err != nil {
		fail(err)
	}
	if _, _, err := s.WriteFile("repodata.json", func(w io.Writer) error { _, err := w.Write(killFile); return err }); err != nil {
		fail(err)
	}

	fill, err := s.NewTemp()
	if err != nil {
		fail(err)
	}
	for p := killPartial; len(p) > 0; p = p[64<<10:] {
		if _, err := fill.Write(p[:64<<10]); err != nil {
			fail(err)
		}
	}
	written := make(chan struct{})
	go s.WriteFile("repodata.json", func(w io.Writer) error {
		w.Write(content(92, 1<<20))
		close(written)
		select {} // the rest of the download never comes
	})
	<-written
	fmt.Println("READY " + fill.Path())
	time.Sleep(2 * time.Minute)
	fail(errors.New("was not killed"))
}
