#define _GNU_SOURCE
#include "CPortcullis.h"
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* epoll_event is a packed struct on x86_64; Swift sees only these flat wrappers. */
int pc_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int pc_epoll_ctl(int ep, int op, int fd, uint32_t events, uint64_t token) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u64 = token;
    return epoll_ctl(ep, op, fd, op == EPOLL_CTL_DEL ? NULL : &ev) == 0 ? 0 : -errno;
}

int pc_epoll_wait(int ep, uint64_t *tokens, uint32_t *events, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n = epoll_wait(ep, evs, max, timeout_ms);
    if (n < 0) return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; i++) {
        tokens[i] = evs[i].data.u64;
        events[i] = evs[i].events;
    }
    return n;
}

int pc_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int pc_accept(int listen_fd) {
    /* Accepted connections stay blocking: libfcgi treats EAGAIN as an error. */
    int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    return fd >= 0 ? fd : -errno;
}

int pc_send_fds(int sock, const int *fds, int count, const void *data, size_t len) {
    if (count > PC_MAX_PASSED_FDS) return -EINVAL;
    struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
    char control[CMSG_SPACE(sizeof(int) * PC_MAX_PASSED_FDS)];
    memset(control, 0, sizeof control);
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (count > 0) {
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * count);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * count);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * count);
    }
    for (;;) {
        ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
        if (n >= 0) return (int)n;
        if (errno != EINTR) return -errno;
    }
}

int pc_recv_fds(int sock, int *fds, int *count, void *data, size_t len) {
    struct iovec iov = { .iov_base = data, .iov_len = len };
    char control[CMSG_SPACE(sizeof(int) * PC_MAX_PASSED_FDS)];
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n;
    do { n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT); } while (n < 0 && errno == EINTR);
    *count = 0;
    if (n < 0) return -errno;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < k && *count < PC_MAX_PASSED_FDS; i++) {
                memcpy(&fds[*count], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
                (*count)++;
            }
        }
    }
    return (int)n;
}

int pc_socketpair(int fds[2]) {
    return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) == 0 ? 0 : -errno;
}

/* ---- libcurl multi ---- */
CURLMcode pc_curl_multi_set_socket_cb(CURLM *m, pc_curl_socket_cb cb, void *userp) {
    CURLMcode rc = curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, cb);
    return rc != CURLM_OK ? rc : curl_multi_setopt(m, CURLMOPT_SOCKETDATA, userp);
}
CURLMcode pc_curl_multi_set_timer_cb(CURLM *m, pc_curl_timer_cb cb, void *userp) {
    CURLMcode rc = curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, cb);
    return rc != CURLM_OK ? rc : curl_multi_setopt(m, CURLMOPT_TIMERDATA, userp);
}
CURLMcode pc_curl_multi_set_long(CURLM *m, CURLMoption opt, long value) { return curl_multi_setopt(m, opt, value); }
void *pc_curl_private(CURL *h) {
    char *p = NULL;
    curl_easy_getinfo(h, CURLINFO_PRIVATE, &p);
    return p;
}
int pc_curl_msg_done(CURLMsg *msg, CURL **easy, CURLcode *result) {
    if (msg->msg != CURLMSG_DONE) return 0;
    *easy = msg->easy_handle;
    *result = msg->data.result;
    return 1;
}
