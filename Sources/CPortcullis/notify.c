#define _GNU_SOURCE
#include "CPortcullis.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* sd_notify(3) without libsystemd: one datagram to the service manager's socket. A leading '@'
   names the abstract namespace (the address is then exactly the name's bytes, no terminator). */
int pc_notify_socket_send(const char *address, const char *message) {
    struct sockaddr_un addr;
    size_t length = strlen(address);
    if (length < 2 || length >= sizeof(addr.sun_path) || (address[0] != '/' && address[0] != '@')) return -EINVAL;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, address, length);
    socklen_t address_length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + length);
    if (address[0] == '@') addr.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    ssize_t sent = sendto(fd, message, strlen(message), MSG_NOSIGNAL, (struct sockaddr *)&addr, address_length);
    int error = sent < 0 ? errno : 0;
    close(fd);
    return -error;
}
