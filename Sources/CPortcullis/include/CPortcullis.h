#ifndef CPORTCULLIS_H
#define CPORTCULLIS_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <curl/curl.h>
#include <sys/epoll.h>

/* ---- libcurl: typed wrappers for the variadic setopt/getinfo ---- */
CURLcode pc_curl_set_long(CURL *h, CURLoption opt, long value);
CURLcode pc_curl_set_off(CURL *h, CURLoption opt, curl_off_t value);
CURLcode pc_curl_set_str(CURL *h, CURLoption opt, const char *value);
CURLcode pc_curl_set_ptr(CURL *h, CURLoption opt, void *value);
CURLcode pc_curl_set_slist(CURL *h, CURLoption opt, struct curl_slist *value);
typedef size_t (*pc_curl_data_cb)(char *ptr, size_t size, size_t nmemb, void *userdata);
CURLcode pc_curl_set_write_cb(CURL *h, pc_curl_data_cb cb, void *userdata);
CURLcode pc_curl_set_header_cb(CURL *h, pc_curl_data_cb cb, void *userdata);
CURLcode pc_curl_set_read_cb(CURL *h, pc_curl_data_cb cb, void *userdata);
long pc_curl_response_code(CURL *h);
double pc_curl_total_time(CURL *h);

/* ---- shared memory: 64-bit atomics that stay correct across processes ---- */
uint64_t pc_atomic_load_u64(const volatile uint64_t *p);
void pc_atomic_store_u64(volatile uint64_t *p, uint64_t v);
int pc_atomic_cas_u64(volatile uint64_t *p, uint64_t expected, uint64_t desired);
uint64_t pc_atomic_add_u64(volatile uint64_t *p, uint64_t delta);
/* Metrics counters: relaxed (no ordering, no fence), inlined into the caller, so recording a
   request is a few `lock add`s on the worker's own block. */
static inline void pc_relaxed_add_u64(volatile uint64_t *p, uint64_t delta) { __atomic_fetch_add(p, delta, __ATOMIC_RELAXED); }
static inline void pc_relaxed_sub_u64(volatile uint64_t *p, uint64_t delta) { __atomic_fetch_sub(p, delta, __ATOMIC_RELAXED); }
static inline void pc_relaxed_store_u64(volatile uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline uint64_t pc_relaxed_load_u64(const volatile uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

/* ---- signals: the handler only writes one byte (async-signal-safe self-pipe) ---- */
/* Installs handlers for the given signals; each delivery writes the signal number as one byte
   to write_fd. Returns 0 or -1 with errno. */
int pc_install_signal_pipe(int write_fd, const int *signals, int count);
void pc_ignore_signal(int signo);

/* ---- process spawning: posix_spawn with one inherited fd (no fork of a threaded Swift process) ---- */
/* Spawns path with argv/envp, dup'ing each inherit_fds[i] to target_fds[i] in the child.
   Returns the child's pid or -errno. */
pid_t pc_spawn(const char *path, char *const argv[], char *const envp[],
               const int *inherit_fds, const int *target_fds, int count);

/* Spawns path in a new session, stdin /dev/null, stdout and stderr to log_fd (daemon mode).
   Returns the child's pid or -errno. */
pid_t pc_spawn_detached(const char *path, char *const argv[], char *const envp[], int log_fd);

/* ---- process lifetime ---- */
/* Asks the kernel to send signo to this process when its parent dies; returns -1 if the
   parent is already gone. */
int pc_set_parent_death_signal(int signo);

/* ---- service manager ---- */
/* Sends message as one datagram to the unix socket address (a path, or '@name' in the abstract
   namespace), as sd_notify(3) does for NOTIFY_SOCKET. Returns 0 or -errno. */
int pc_notify_socket_send(const char *address, const char *message);

/* ---- unix sockets ---- */
/* Creates, binds and listens on a unix stream socket at path. Returns the fd or -errno. */
int pc_unix_listen(const char *path, int backlog);
/* Returns 1 if something accepts connections at path, 0 otherwise. */
int pc_unix_probe(const char *path);

/* ---- accepting without a thundering herd ---- */
/* An epoll set holding listen_fd with EPOLLEXCLUSIVE (one waiter woken per connection, across
   threads and processes) and wake_fd (shutdown). Returns the epoll fd or -errno. */
int pc_accept_waiter_create(int listen_fd, int wake_fd);
/* Blocks until a connection is pending (returns 1) or wake_fd is readable (returns 0);
   -1 on error other than EINTR. */
int pc_accept_waiter_wait(int epoll_fd, int wake_fd);


/* ---- event loop: flat epoll wrappers (epoll_event is packed), eventfd, accept ---- */
int pc_epoll_create(void);
/* op: EPOLL_CTL_ADD/MOD/DEL; token comes back from pc_epoll_wait. Returns 0 or -errno. */
int pc_epoll_ctl(int ep, int op, int fd, uint32_t events, uint64_t token);
/* Fills tokens/events; returns the count, 0 on EINTR, or -errno. */
int pc_epoll_wait(int ep, uint64_t *tokens, uint32_t *events, int max, int timeout_ms);
int pc_eventfd(void);
/* Accepts one connection (blocking fd, close-on-exec); -errno when none (EAGAIN) or on error. */
int pc_accept(int listen_fd);

/* ---- descriptor passing (SCM_RIGHTS) over a SOCK_SEQPACKET socketpair ---- */
#define PC_MAX_PASSED_FDS 64
int pc_socketpair(int fds[2]);
/* Sends data with count descriptors; returns bytes sent or -errno. */
int pc_send_fds(int sock, const int *fds, int count, const void *data, size_t len);
/* Receives one message without blocking; *count descriptors land in fds. Returns bytes or -errno. */
int pc_recv_fds(int sock, int *fds, int *count, void *data, size_t len);

/* ---- libcurl multi interface ---- */
typedef int (*pc_curl_socket_cb)(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp);
typedef int (*pc_curl_timer_cb)(CURLM *multi, long timeout_ms, void *userp);
CURLMcode pc_curl_multi_set_socket_cb(CURLM *m, pc_curl_socket_cb cb, void *userp);
CURLMcode pc_curl_multi_set_timer_cb(CURLM *m, pc_curl_timer_cb cb, void *userp);
CURLMcode pc_curl_multi_set_long(CURLM *m, CURLMoption opt, long value);
void *pc_curl_private(CURL *h);
/* 1 and the handle and result when msg reports a finished transfer. */
int pc_curl_msg_done(CURLMsg *msg, CURL **easy, CURLcode *result);

/* ---- misc ---- */
int pc_set_cloexec(int fd, int on);

/* ---- hiredis async: the context, its event hooks and redisAsyncCommandArgv, for the rate-limit
   store on the event loop (the CHiredis module exposes only the blocking API) ---- */
#include <hiredis/async.h>

#endif
