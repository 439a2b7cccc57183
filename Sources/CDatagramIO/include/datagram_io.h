#ifndef TANDEM_DATAGRAM_IO_H
#define TANDEM_DATAGRAM_IO_H

#include <stdint.h>

// Batched UDP I/O and epoll for the TURN service's packet path. Swift's Glibc module exports neither
// epoll nor recvmmsg/sendmmsg, and decoding socket addresses here keeps sockaddr out of Swift.

/// One datagram of a batch. Addresses are decoded: IPv4 in `low` (host order), IPv6 as two
/// big-endian halves, matching the Swift `IPAddress`.
typedef struct {
    void *base;
    /// Receive: room at `base`. Send: bytes to send.
    uint32_t length;
    /// Receive: the datagram did not fit and was cut.
    uint8_t truncated;
    uint8_t v6;
    uint16_t port;
    uint64_t high;
    uint64_t low;
} tandem_datagram;

/// Up to `count` datagrams without blocking; each `length` is set to the bytes received. Returns the
/// number received, or -errno (-EAGAIN when none is waiting).
int tandem_recv_batch(int fd, tandem_datagram *datagrams, unsigned count);

/// Sends `count` datagrams with as few calls as the kernel allows. Returns how many were sent before
/// the first failure, with that failure's errno in `*error` (0 when all were sent).
int tandem_send_batch(int fd, const tandem_datagram *datagrams, unsigned count, int *error);

/// A non-blocking UDP socket bound to the address (port 0: any). With `reuse_port`, several sockets
/// share the port and the kernel spreads clients over them. Returns the fd, or -errno; `*bound_port`
/// is the port bound.
int tandem_udp_open(uint8_t v6, uint64_t high, uint64_t low, uint16_t port, int reuse_port, int buffer_bytes,
                    uint16_t *bound_port);

int tandem_epoll_create(void);
/// Watches `fd` for reading; `token` comes back from `tandem_epoll_wait`.
int tandem_epoll_add(int epoll_fd, int fd, uint64_t token);
int tandem_epoll_remove(int epoll_fd, int fd);
/// Waits up to `timeout_ms` (-1: for ever) and fills `tokens`. Returns the count, 0 on timeout or
/// interruption, or -errno.
int tandem_epoll_wait(int epoll_fd, uint64_t *tokens, int max, int timeout_ms);

int tandem_eventfd_create(void);
void tandem_eventfd_signal(int fd);
void tandem_eventfd_drain(int fd);

#endif
