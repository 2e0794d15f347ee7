// eddy-test-exec PARENT_PID PROGRAM [ARGS...]: the exec shim of the test harness (EddyTestSupport.ChildProcess).
// It asks the kernel to SIGKILL it when the thread that spawned it ends (PR_SET_PDEATHSIG, kept across exec),
// checks that its parent is still PARENT_PID (the parent may have died between the spawn and the prctl, and then
// no signal would ever come), and execs PROGRAM in its place. So a server a test starts dies with the test
// process, even when that process is SIGKILLed. It also closes every descriptor above 2 that the test process let
// leak into it (sockets and pipes of other tests), so a child holds only its own standard files.
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: eddy-test-exec PARENT_PID PROGRAM [ARGS...]\n");
        return 127;
    }
    char *end = NULL;
    long parent = strtol(argv[1], &end, 10);
    if (end == argv[1] || *end != '\0' || parent <= 0) {
        fprintf(stderr, "eddy-test-exec: '%s' is not a process ID\n", argv[1]);
        return 127;
    }
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
        fprintf(stderr, "eddy-test-exec: prctl(PR_SET_PDEATHSIG): %s\n", strerror(errno));
        return 127;
    }
    if ((long)getppid() != parent) return 127;  // the test process is gone already
    closefrom(3);
    execv(argv[2], argv + 2);
    fprintf(stderr, "eddy-test-exec: cannot run %s: %s\n", argv[2], strerror(errno));
    return 127;
}
