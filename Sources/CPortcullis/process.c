#define _GNU_SOURCE
#include "CPortcullis.h"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <unistd.h>

static int signal_pipe_fd = -1;

static void on_signal(int signo) {
    int saved = errno;
    unsigned char byte = (unsigned char)signo;
    if (signal_pipe_fd >= 0) {
        ssize_t ignored = write(signal_pipe_fd, &byte, 1);
        (void)ignored;
    }
    errno = saved;
}

int pc_install_signal_pipe(int write_fd, const int *signals, int count) {
    signal_pipe_fd = write_fd;
    for (int i = 0; i < count; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        if (sigaction(signals[i], &sa, NULL) != 0) return -1;
    }
    return 0;
}

void pc_ignore_signal(int signo) { signal(signo, SIG_IGN); }
void pc_default_signal(int signo) { signal(signo, SIG_DFL); }

pid_t pc_spawn(const char *path, char *const argv[], char *const envp[],
               const int *inherit_fds, const int *target_fds, int count) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
    for (int i = 0; i < count; i++) {
        if (inherit_fds[i] == target_fds[i]) {
            /* dup2 onto itself would keep FD_CLOEXEC; clear it by a round trip. */
            posix_spawn_file_actions_adddup2(&actions, inherit_fds[i], 1000 + i);
            posix_spawn_file_actions_adddup2(&actions, 1000 + i, target_fds[i]);
            posix_spawn_file_actions_addclose(&actions, 1000 + i);
        } else {
            posix_spawn_file_actions_adddup2(&actions, inherit_fds[i], target_fds[i]);
        }
    }
    /* Children start with default signal dispositions and an empty mask. */
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, path, &actions, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    return rc == 0 ? pid : -rc;
}

int pc_errno(void) { return errno; }

int pc_set_cloexec(int fd, int on) {
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0) return -1;
    flags = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
    return fcntl(fd, F_SETFD, flags);
}
