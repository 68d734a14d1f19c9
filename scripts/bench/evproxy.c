// evproxy: the measured ceiling of Portcullis's design — NOT shipped code, never run in production.
//
// `make bench` (scripts/bench.sh) compiles this with `gcc -O2 evproxy.c -lfcgi` and puts it behind
// the same front nginx as the gateway, with the same FastCGI settings, to show what an event-driven
// FastCGI worker can reach on this machine before it does any gateway work. It is the floor of a
// worker's cost, not a gateway: no routing, auth, limits, header hygiene, request bodies, timeouts
// or logging; GET only; upstream answers must carry Content-Length and fit in 16 KB.
//
// Model (the one issue 8 asks of the worker): one epoll loop per process over kept FastCGI
// connections and upstream sockets. libfcgi still parses and writes the FastCGI records: a
// connection is set up with FCGX_InitRequest(&req, -1, 0); when epoll reports it readable, the
// loop sets req.ipcFd = fd and req.keepConnection = 1 and calls FCGX_Accept_r, which reads that
// request's records; the answer is written with FCGX_Finish_r. Each FastCGI connection owns one
// kept-alive TCP connection to the upstream (127.0.0.1:PORT), so no request waits for another.
// With LOOPS > 1 the process forks LOOPS-1 more loops sharing the listening socket
// (EPOLLEXCLUSIVE: a new connection wakes one loop).
//
//   evproxy SOCKET UPSTREAM_PORT [LOOPS]
//
// Simplifications a real worker cannot make: the FastCGI socket stays blocking, so FCGX_Accept_r
// reads a request's records in one go (nginx writes a bodiless request in one write), and the
// answer is written blocking by FCGX_Finish_r.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcgiapp.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_FDS 65536
#define BUF_SIZE 16384

typedef struct conn {
    FCGX_Request req;
    int fd;         // the FastCGI connection from nginx
    int up;         // its kept upstream connection, -1 when none
    int busy;       // a request is waiting for the upstream's answer
    size_t got;     // bytes of the upstream's answer in buf
    char buf[BUF_SIZE];
} conn;

static int upstream_port, ep;
static conn *by_fd[MAX_FDS];

static int watch(int fd, conn *c) {
    if (fd < 0 || fd >= MAX_FDS) return -1;
    struct epoll_event e = {.events = EPOLLIN, .data.fd = fd};
    by_fd[fd] = c;
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
}

static void unwatch(int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    by_fd[fd] = NULL;
}

static int upstream_connect(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0) return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(upstream_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) { close(fd); return -1; }
    return fd;
}

static void close_upstream(conn *c) {
    if (c->up < 0) return;
    unwatch(c->up);
    close(c->up);
    c->up = -1;
}

// Forget a connection libfcgi has already closed (or close it ourselves).
static void drop(conn *c) {
    close_upstream(c);
    if (c->fd >= 0) by_fd[c->fd] = NULL;
    if (c->req.ipcFd >= 0) { unwatch(c->req.ipcFd); close(c->req.ipcFd); }
    free(c);
}

// Answer the current request and keep the connection when nginx asked for it (FCGI_KEEP_CONN).
static void finish(conn *c) {
    c->busy = 0;
    FCGX_Finish_r(&c->req);
    if (c->req.ipcFd < 0) {  // nginx did not keep the connection: libfcgi closed it
        by_fd[c->fd] = NULL;
        c->fd = -1;
        drop(c);
    }
}

static void answer_error(conn *c, const char *status) {
    FCGX_FPrintF(c->req.out, "Status: %s\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n", status);
    finish(c);
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k; n -= (size_t)k;
    }
    return 0;
}

// nginx wrote a request on a kept FastCGI connection: read it with libfcgi, send it upstream.
static void on_fastcgi_readable(conn *c) {
    c->req.ipcFd = c->fd;
    c->req.keepConnection = 1;  // so FCGX_Accept_r's implicit finish does not close the socket
    if (FCGX_Accept_r(&c->req) != 0) {  // nginx closed it (libfcgi closed our end) or sent garbage
        c->req.ipcFd = -1;
        by_fd[c->fd] = NULL;  // closing removed it from epoll
        c->fd = -1;
        drop(c);
        return;
    }
    const char *uri = FCGX_GetParam("REQUEST_URI", c->req.envp);
    const char *addr = FCGX_GetParam("REMOTE_ADDR", c->req.envp);
    char head[4096];
    int n = snprintf(head, sizeof head, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: %s\r\n\r\n",
                     uri ? uri : "/", addr ? addr : "");
    if (n <= 0 || n >= (int)sizeof head) { answer_error(c, "414 URI Too Long"); return; }
    for (int attempt = 0; attempt < 2; attempt++) {
        if (c->up < 0) {
            c->up = upstream_connect();
            if (c->up < 0 || watch(c->up, c) < 0) { close_upstream(c); answer_error(c, "502 Bad Gateway"); return; }
        }
        if (write_all(c->up, head, (size_t)n) == 0) { c->busy = 1; c->got = 0; return; }
        close_upstream(c);  // the kept connection went stale: one retry on a fresh one
    }
    answer_error(c, "502 Bad Gateway");
}

// The upstream sent bytes: once the whole answer is in, relay status and body to nginx.
static void on_upstream_readable(conn *c) {
    ssize_t k = read(c->up, c->buf + c->got, sizeof c->buf - 1 - c->got);
    if (k <= 0) {
        if (k < 0 && errno == EINTR) return;
        close_upstream(c);
        if (c->busy) answer_error(c, "502 Bad Gateway");
        return;
    }
    if (!c->busy) { close_upstream(c); return; }  // bytes nobody asked for
    c->got += (size_t)k;
    c->buf[c->got] = 0;
    char *end = memmem(c->buf, c->got, "\r\n\r\n", 4);
    if (!end) {
        if (c->got >= sizeof c->buf - 1) { close_upstream(c); answer_error(c, "502 Bad Gateway"); }
        return;
    }
    char *body = end + 4;
    *end = 0;  // search the head only
    char *cl = strcasestr(c->buf, "\r\ncontent-length:");
    long length = cl ? atol(cl + 17) : -1;
    *end = '\r';
    if (length < 0 || (size_t)length > sizeof c->buf - 1 - (size_t)(body - c->buf)) {
        close_upstream(c);
        answer_error(c, "502 Bad Gateway");
        return;
    }
    if (c->got - (size_t)(body - c->buf) < (size_t)length) return;  // more body to come
    // "HTTP/1.1 200 OK" -> "Status: 200 OK": keep the reason phrase (nginx relays the status line
    // as given, and clients such as h2load reject one without a reason).
    char *line_end = strstr(c->buf, "\r\n");
    const char *status = "502 Bad Gateway";
    if (strncmp(c->buf, "HTTP/1.", 7) == 0 && c->buf[8] == ' ' && line_end - c->buf > 12) {
        *line_end = 0;
        status = c->buf + 9;
    }
    FCGX_FPrintF(c->req.out, "Status: %s\r\nContent-Type: application/json\r\nContent-Length: %ld\r\n\r\n", status, length);
    FCGX_PutStr(body, (int)length, c->req.out);
    finish(c);
}

static void loop(int listen_fd) {
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event le = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.fd = listen_fd};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &le) < 0) { perror("evproxy: epoll"); exit(1); }
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { perror("evproxy: epoll_wait"); exit(1); }
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == listen_fd) {
                for (;;) {
                    int cfd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);  // blocking: see the header
                    if (cfd < 0) break;
                    conn *c = calloc(1, sizeof *c);
                    if (!c || cfd >= MAX_FDS) { free(c); close(cfd); continue; }
                    FCGX_InitRequest(&c->req, -1, 0);
                    c->fd = cfd;
                    c->up = -1;
                    if (watch(cfd, c) < 0) { close(cfd); free(c); }
                }
                continue;
            }
            conn *c = by_fd[fd];
            if (!c) continue;
            if (fd == c->fd) on_fastcgi_readable(c);
            else on_upstream_readable(c);
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: evproxy SOCKET UPSTREAM_PORT [LOOPS]\n"); return 2; }
    upstream_port = atoi(argv[2]);
    int loops = argc > 3 ? atoi(argv[3]) : 1;
    signal(SIGPIPE, SIG_IGN);
    if (FCGX_Init() != 0) { fprintf(stderr, "evproxy: FCGX_Init failed\n"); return 1; }
    signal(SIGTERM, SIG_DFL);  // libfcgi catches SIGTERM and SIGUSR1 for its accept loop, unused here
    signal(SIGUSR1, SIG_DFL);
    unlink(argv[1]);
    int listen_fd = FCGX_OpenSocket(argv[1], 1024);
    if (listen_fd < 0) { fprintf(stderr, "evproxy: cannot listen on %s\n", argv[1]); return 1; }
    chmod(argv[1], 0666);
    if (fcntl(listen_fd, F_SETFL, O_NONBLOCK) < 0) { perror("evproxy: fcntl"); return 1; }
    for (int i = 1; i < loops; i++) {
        pid_t pid = fork();
        if (pid == 0) { prctl(PR_SET_PDEATHSIG, SIGTERM); break; }
        if (pid < 0) { perror("evproxy: fork"); return 1; }
    }
    loop(listen_fd);
    return 0;
}
