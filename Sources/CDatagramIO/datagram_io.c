#define _GNU_SOURCE
#include "datagram_io.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

enum { BATCH = 64 };

static void decode(const struct sockaddr_storage *ss, tandem_datagram *d) {
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        uint64_t h, l;
        memcpy(&h, a->sin6_addr.s6_addr, 8);
        memcpy(&l, a->sin6_addr.s6_addr + 8, 8);
        d->v6 = 1;
        d->high = be64toh(h);
        d->low = be64toh(l);
        d->port = ntohs(a->sin6_port);
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        d->v6 = 0;
        d->high = 0;
        d->low = ntohl(a->sin_addr.s_addr);
        d->port = ntohs(a->sin_port);
    }
}

static socklen_t encode(const tandem_datagram *d, struct sockaddr_storage *ss) {
    memset(ss, 0, sizeof(struct sockaddr_in6));
    if (d->v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        uint64_t h = htobe64(d->high), l = htobe64(d->low);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(d->port);
        memcpy(a->sin6_addr.s6_addr, &h, 8);
        memcpy(a->sin6_addr.s6_addr + 8, &l, 8);
        return sizeof(struct sockaddr_in6);
    }
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons(d->port);
    a->sin_addr.s_addr = htonl((uint32_t)d->low);
    return sizeof(struct sockaddr_in);
}

int tandem_recv_batch(int fd, tandem_datagram *datagrams, unsigned count) {
    struct mmsghdr messages[BATCH];
    struct iovec vectors[BATCH];
    struct sockaddr_storage addresses[BATCH];
    if (count > BATCH) count = BATCH;
    for (unsigned i = 0; i < count; i++) {
        vectors[i].iov_base = datagrams[i].base;
        vectors[i].iov_len = datagrams[i].length;
        memset(&messages[i].msg_hdr, 0, sizeof(struct msghdr));
        messages[i].msg_hdr.msg_name = &addresses[i];
        messages[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
        messages[i].msg_hdr.msg_iov = &vectors[i];
        messages[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(fd, messages, count, MSG_DONTWAIT, NULL);
    if (n < 0) return -errno;
    for (int i = 0; i < n; i++) {
        datagrams[i].length = messages[i].msg_len;
        datagrams[i].truncated = (messages[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
        decode(&addresses[i], &datagrams[i]);
    }
    return n;
}

int tandem_send_batch(int fd, const tandem_datagram *datagrams, unsigned count, int *error) {
    struct mmsghdr messages[BATCH];
    struct iovec vectors[BATCH];
    struct sockaddr_storage addresses[BATCH];
    unsigned sent = 0;
    *error = 0;
    while (sent < count) {
        unsigned n = count - sent < BATCH ? count - sent : BATCH;
        for (unsigned i = 0; i < n; i++) {
            const tandem_datagram *d = &datagrams[sent + i];
            vectors[i].iov_base = d->base;
            vectors[i].iov_len = d->length;
            memset(&messages[i].msg_hdr, 0, sizeof(struct msghdr));
            messages[i].msg_hdr.msg_name = &addresses[i];
            messages[i].msg_hdr.msg_namelen = encode(d, &addresses[i]);
            messages[i].msg_hdr.msg_iov = &vectors[i];
            messages[i].msg_hdr.msg_iovlen = 1;
        }
        int r;
        if (n == 1) {
            ssize_t one;
            do one = sendmsg(fd, &messages[0].msg_hdr, MSG_DONTWAIT); while (one < 0 && errno == EINTR);
            r = one < 0 ? -1 : 1;
        } else {
            do r = sendmmsg(fd, messages, n, MSG_DONTWAIT); while (r < 0 && errno == EINTR);
        }
        if (r < 0) {
            *error = errno;
            return (int)sent;
        }
        // A short count means the next message failed: the next call reports why.
        sent += (unsigned)r;
    }
    return (int)sent;
}

int tandem_udp_open(uint8_t v6, uint64_t high, uint64_t low, uint16_t port, int reuse_port, int buffer_bytes,
                    uint16_t *bound_port) {
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    if (v6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) goto fail;
    if (buffer_bytes > 0) {
        // The FORCE options (CAP_NET_ADMIN) get the size asked for whatever net.core.rmem_max and
        // wmem_max say; without the capability the kernel caps the plain ones at them.
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buffer_bytes, sizeof buffer_bytes) < 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer_bytes, sizeof buffer_bytes);
        if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buffer_bytes, sizeof buffer_bytes) < 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer_bytes, sizeof buffer_bytes);
    }
    tandem_datagram d = {.v6 = v6, .high = high, .low = low, .port = port};
    struct sockaddr_storage ss;
    socklen_t length = encode(&d, &ss);
    if (bind(fd, (struct sockaddr *)&ss, length) < 0) goto fail;
    length = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &length) < 0) goto fail;
    decode(&ss, &d);
    *bound_port = d.port;
    return fd;
fail:;
    int saved = errno;
    close(fd);
    return -saved;
}

int tandem_epoll_create(void) {
    int fd = epoll_create1(EPOLL_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int tandem_epoll_add(int epoll_fd, int fd, uint64_t token) {
    struct epoll_event event = {.events = EPOLLIN, .data.u64 = token};
    return epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event) < 0 ? -errno : 0;
}

int tandem_epoll_remove(int epoll_fd, int fd) {
    return epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, NULL) < 0 ? -errno : 0;
}

int tandem_epoll_wait(int epoll_fd, uint64_t *tokens, int max, int timeout_ms) {
    struct epoll_event events[BATCH];
    if (max > BATCH) max = BATCH;
    int n = epoll_wait(epoll_fd, events, max, timeout_ms);
    if (n < 0) return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; i++) tokens[i] = events[i].data.u64;
    return n;
}

int tandem_eventfd_create(void) {
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

void tandem_eventfd_signal(int fd) {
    uint64_t one = 1;
    ssize_t r = write(fd, &one, sizeof one);
    (void)r;
}

void tandem_eventfd_drain(int fd) {
    uint64_t value;
    ssize_t r = read(fd, &value, sizeof value);
    (void)r;
}
