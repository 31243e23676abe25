/*
 * pause: the init process of a Kubernetes pod sandbox, for the image registry.k8s.io/pause
 * that the test node's kubelet asks for (no registry is reachable to pull the real one).
 * Written here after the behaviour of Kubernetes' build/pause/linux/pause.c:
 *   - it does nothing but wait for signals (pause(2) in a loop);
 *   - as PID 1 of the pod's PID namespace it reaps every zombie (SIGCHLD -> waitpid loop);
 *   - SIGINT or SIGTERM end it with status 0;
 *   - "-v" prints the version.
 * Built with `gcc -static -Os` by tests/images/pause.py: the image is FROM scratch.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSION "3.10.2-modelops"

static void on_stop(int signo) {
    /* only async-signal-safe calls in a handler: write(2) and _exit(2) */
    static const char msg[] = "pause: shutting down, got SIGINT or SIGTERM\n";
    (void)signo;
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0) { /* nothing to do */ }
    _exit(0);
}

static void on_child(int signo) {
    int saved = errno;
    (void)signo;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static int handle(int signo, void (*handler)(int), int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = flags;
    sigemptyset(&sa.sa_mask);
    return sigaction(signo, &sa, NULL);
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "-v") == 0) {
        printf("pause.c %s\n", VERSION);
        return 0;
    }
    if (getpid() != 1) {
        /* not an error: containerd without a shared PID namespace, or a test run */
        fprintf(stderr, "pause: warning: not PID 1, zombies of this namespace are not mine to reap\n");
    }
    if (handle(SIGINT, on_stop, 0) < 0 || handle(SIGTERM, on_stop, 0) < 0 ||
        handle(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART) < 0) {
        perror("pause: sigaction");
        return 1;
    }
    for (;;) {
        pause();
    }
    /* not reached */
    return 42;
}
