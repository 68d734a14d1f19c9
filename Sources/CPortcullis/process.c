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

int pc_set_cloexec(int fd, int on) {
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0) return -1;
    flags = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
    return fcntl(fd, F_SETFD, flags);
}

#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>

int pc_set_parent_death_signal(int signo) {
    pid_t parent = getppid();
    if (prctl(PR_SET_PDEATHSIG, signo) != 0) return -1;
    /* The parent may have died before prctl: then we were reparented. */
    return getppid() == parent ? 0 : -1;
}

static int fill_addr(struct sockaddr_un *addr, const char *path) {
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof addr->sun_path) return -ENAMETOOLONG;
    strcpy(addr->sun_path, path);
    return 0;
}

int pc_unix_listen(const char *path, int backlog) {
    struct sockaddr_un addr;
    int rc = fill_addr(&addr, path);
    if (rc < 0) return rc;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, backlog) != 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    return fd;
}

int pc_unix_probe(const char *path) {
    struct sockaddr_un addr;
    if (fill_addr(&addr, path) < 0) return 0;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    int ok = connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0;
    close(fd);
    return ok;
}

#include <sys/epoll.h>

int pc_accept_waiter_create(int listen_fd, int wake_fd) {
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) return -errno;
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | EPOLLEXCLUSIVE;
    ev.data.fd = listen_fd;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev) != 0) { int e = errno; close(ep); return -e; }
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.fd = wake_fd;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, wake_fd, &ev) != 0) { int e = errno; close(ep); return -e; }
    return ep;
}

int pc_accept_waiter_wait(int epoll_fd, int wake_fd) {
    for (;;) {
        struct epoll_event events[2];
        int n = epoll_wait(epoll_fd, events, 2, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        int pending = 0;
        for (int i = 0; i < n; i++) {
            if (events[i].data.fd == wake_fd) return 0;
            pending = 1;
        }
        if (pending) return 1;
    }
}
